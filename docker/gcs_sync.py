"""Mirror gs://bucket/prefix into a local folder: `gcloud storage rsync` for one direction, no deletes.

entrypoint-triton.sh runs this when QWEN3_TTS_GCS_MODEL_BUCKET is set, so the GPU image needs only the
pinned google-cloud-storage client (docker/requirements-gcs.txt) instead of the Cloud SDK. Credentials are
Application Default Credentials: the Cloud Run service account, or GOOGLE_APPLICATION_CREDENTIALS locally.

An object is fetched when the local file is missing or differs in size or mtime; after a download the
file's mtime is set to the object's update time (as rsync does), so a warm cache costs one listing.
Downloads go to NAME.partial and are renamed, so an interrupted sync never leaves a truncated weight file.
Usage: python3 gcs_sync.py gs://bucket/prefix DEST_DIR [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any


def parse_gcs_url(url: str) -> tuple[str, str]:
    """gs://bucket/some/prefix/ -> ("bucket", "some/prefix")."""
    if not url.startswith("gs://"):
        raise ValueError(f"not a gs:// URL: {url!r}")
    bucket, _, prefix = url[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, prefix.strip("/")


def local_path(dest: Path, prefix: str, name: str) -> Path | None:
    """Where object `name` lands under dest; None for folder placeholder objects."""
    rel = name[len(prefix) :] if prefix else name
    rel = rel.lstrip("/")
    if not rel or rel.endswith("/"):
        return None
    parts = PurePosixPath(rel).parts
    # An object name is attacker-controlled text as far as the file system is concerned.
    if any(part in ("..", ".") for part in parts):
        raise ValueError(f"refusing object name outside the destination: {name!r}")
    return dest.joinpath(*parts)


def needs_download(path: Path, size: int, updated_ts: float) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return True
    return st.st_size != size or int(st.st_mtime) != int(updated_ts)


def plan(blobs: Iterable[Any], dest: Path, prefix: str) -> list[tuple[Any, Path]]:
    todo = []
    for blob in blobs:
        path = local_path(dest, prefix, blob.name)
        if path is not None and needs_download(path, blob.size, blob.updated.timestamp()):
            todo.append((blob, path))
    return todo


def download(blob: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    blob.download_to_filename(str(partial))
    ts = blob.updated.timestamp()
    os.utime(partial, (ts, ts))
    os.replace(partial, path)


def sync(client: Any, url: str, dest: Path, workers: int = 8) -> int:
    """Returns the number of files downloaded; raises if the prefix holds no objects (a wrong URL)."""
    bucket, prefix = parse_gcs_url(url)
    blobs = list(client.list_blobs(bucket, prefix=f"{prefix}/" if prefix else None))
    if not blobs:
        raise FileNotFoundError(f"no objects under {url}")
    todo = plan(blobs, dest, prefix)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # list() re-raises the first download error instead of dropping it.
        list(pool.map(lambda item: download(*item), todo))
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="gs://bucket/prefix")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)

    try:
        parse_gcs_url(args.url)  # a typo fails here, before credentials are looked up
    except ValueError as exc:
        sys.stderr.write(f"gcs_sync: {exc}\n")
        return 1

    from google.cloud import storage  # only in the GPU image (docker/requirements-gcs.txt)

    try:
        count = sync(storage.Client(), args.url, args.dest, args.workers)
    except (ValueError, FileNotFoundError) as exc:
        sys.stderr.write(f"gcs_sync: {exc}\n")
        return 1
    sys.stderr.write(f"gcs_sync: {count} file(s) downloaded from {args.url} into {args.dest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
