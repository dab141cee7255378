"""The voice library's schema revisions, oldest first (``down_revision`` links them)."""
