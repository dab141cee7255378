# State of dev (the gcs backend of versions.tf); the bucket comes on the command line:
#   terraform init -backend-config=dev.backend.hcl -backend-config="bucket=<state-bucket>"
prefix = "qwen3-tts/dev"
