"""docker/gcs_sync.py against an in-memory stand-in for the google-cloud-storage client."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from .helpers import REPO

spec = importlib.util.spec_from_file_location("gcs_sync", REPO / "docker" / "gcs_sync.py")
gcs_sync = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gcs_sync)


@dataclass
class FakeBlob:
    name: str
    data: bytes
    updated: datetime = field(default_factory=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))

    @property
    def size(self) -> int:
        return len(self.data)

    def download_to_filename(self, filename: str) -> None:
        Path(filename).write_bytes(self.data)


@dataclass
class FakeClient:
    blobs: dict[str, list[FakeBlob]]
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def list_blobs(self, bucket: str, prefix: str | None = None) -> list[FakeBlob]:
        self.calls.append((bucket, prefix))
        return [b for b in self.blobs.get(bucket, []) if b.name.startswith(prefix or "")]


def weights() -> FakeClient:
    return FakeClient(
        {
            "bkt": [
                FakeBlob("qwen3-tts/", b""),  # folder placeholder object
                FakeBlob("qwen3-tts/custom_voice/config.json", b"{}"),
                FakeBlob("qwen3-tts/custom_voice/model.safetensors", b"x" * 1000),
                FakeBlob("qwen3-tts-old/base/model.safetensors", b"old"),
            ]
        }
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("gs://bkt/qwen3-tts", ("bkt", "qwen3-tts")),
        ("gs://bkt/a/b/", ("bkt", "a/b")),
        ("gs://bkt", ("bkt", "")),
    ],
)
def test_parse_gcs_url(url: str, expected: tuple[str, str]) -> None:
    assert gcs_sync.parse_gcs_url(url) == expected


@pytest.mark.parametrize("url", ["s3://bkt/x", "gs://", "/local/path", "bkt/x"])
def test_parse_gcs_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        gcs_sync.parse_gcs_url(url)


def test_object_names_cannot_escape_the_destination(tmp_path: Path) -> None:
    assert gcs_sync.local_path(tmp_path, "p", "p/") is None
    assert gcs_sync.local_path(tmp_path, "p", "p/a/b.bin") == tmp_path / "a" / "b.bin"
    with pytest.raises(ValueError):
        gcs_sync.local_path(tmp_path, "p", "p/../../etc/passwd")


def test_sync_downloads_once_then_only_changes(tmp_path: Path) -> None:
    client = weights()
    assert gcs_sync.sync(client, "gs://bkt/qwen3-tts", tmp_path) == 2
    assert client.calls == [("bkt", "qwen3-tts/")]  # the trailing '/' keeps qwen3-tts-old out
    model = tmp_path / "custom_voice" / "model.safetensors"
    assert model.read_bytes() == b"x" * 1000
    assert int(model.stat().st_mtime) == int(client.blobs["bkt"][2].updated.timestamp())
    assert not list(tmp_path.rglob("*.partial"))
    assert not (tmp_path.parent / "base").exists()

    assert gcs_sync.sync(client, "gs://bkt/qwen3-tts", tmp_path) == 0  # warm cache: nothing fetched

    client.blobs["bkt"][2].data = b"y" * 1001
    assert gcs_sync.sync(client, "gs://bkt/qwen3-tts", tmp_path) == 1
    assert model.read_bytes() == b"y" * 1001


def test_an_empty_prefix_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        gcs_sync.sync(weights(), "gs://bkt/typo", tmp_path)


def test_main_reports_bad_urls_without_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Checked before google.cloud is imported, so this runs without the GPU image's client library.
    assert gcs_sync.main(["s3://x/y", str(tmp_path)]) == 1
    assert "not a gs:// URL" in capsys.readouterr().err
