"""Local paths, s3:// and gs:// URIs behind one pyarrow filesystem interface.

Credentials come from the environment, never from the config: for S3 the AWS variables,
profile or instance role; for GCS the VM's service account or GOOGLE_APPLICATION_CREDENTIALS.
An S3-compatible store is reached with `storage.endpoint_url` or AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from orchestrator.errors import StorageError


def is_remote(uri: str) -> bool:
    return uri.startswith(("s3://", "gs://"))


WEB = ("http://", "https://")


def filesystem(uri: str, endpoint_url: str | None = None, region: str | None = None, web: bool = False):
    """(pyarrow filesystem, path inside it) for a local path, an s3:// or a gs:// URI; with `web` (data to read),
    an http(s) URL of a file too (as pandas' read_csv(url) reads it), through fsspec's HTTP filesystem, and a
    local zip archive, as the folder it packs (a Kaggle download: titanic.zip, or titanic.zip/train.csv)."""
    if web and uri.startswith(WEB):
        import fsspec  # with Ray Train and Tune; its HTTP filesystem runs on aiohttp, which Ray installs

        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("https"))), uri
    if web and (zipped := zip_archive(uri)):
        return _zip_filesystem(uri, *zipped)
    if not is_remote(uri):
        if "://" in uri:
            raise StorageError(f"unsupported storage URI {uri!r}: use a local path, s3://bucket/prefix or "
                               f"gs://bucket/prefix{', or an https:// URL of a file' if web else ''}")
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise StorageError(f"{uri!r} has no bucket: use {parsed.scheme}://bucket/prefix")
    if parsed.scheme == "gs":
        return pafs.GcsFileSystem(), parsed.netloc + parsed.path.rstrip("/")
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs = dict(connect_timeout=5, request_timeout=30, retry_strategy=pafs.AwsStandardS3RetryStrategy(3))
    if endpoint:
        ep = urlparse(endpoint)
        kwargs.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
        kwargs.setdefault("region", region or os.environ.get("AWS_REGION", "us-east-1"))
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs), parsed.netloc + parsed.path.rstrip("/")


ZIP_PATH = re.compile(r"(?P<archive>.+?\.zip)(?:/+(?P<member>.*))?", re.IGNORECASE)


def zip_archive(uri: str) -> tuple[str, str] | None:
    """(the zip archive, the member's name) where a local path is a zip file or a path inside one
    (titanic.zip/train.csv); else None."""
    if "://" in uri or not (m := ZIP_PATH.fullmatch(uri)) or not os.path.isfile(os.path.expanduser(m["archive"])):
        return None
    return str(Path(m["archive"]).expanduser().resolve()), (m["member"] or "").strip("/")


def _zip_filesystem(uri: str, archive: str, member: str):
    """A zip archive read in place, its members at paths below the archive's own (/data/titanic.zip/train.csv),
    so that they are named, and found by their folders, as unpacked files would be. Nothing is unpacked to
    disk: no member's name can reach outside the archive (zip-slip)."""
    import zipfile

    from fsspec.implementations.zip import ZipFileSystem

    class ZipHandler(pafs.FSSpecHandler):
        def inner(self, path: str) -> str | None:  # the member's name; None: not in the archive
            return "" if path == archive else path[len(archive) + 1:] if path.startswith(archive + "/") else None

        def outer(self, info: pafs.FileInfo) -> pafs.FileInfo:
            return pafs.FileInfo(posixpath.join(archive, info.path), info.type, size=info.size, mtime=info.mtime)

        def get_file_info(self, paths):
            return [pafs.FileInfo(path, pafs.FileType.NotFound) if (name := self.inner(path)) is None
                    else self.outer(super(ZipHandler, self).get_file_info([name])[0]) for path in paths]

        def get_file_info_selector(self, selector):
            if (name := self.inner(selector.base_dir)) is None:
                raise FileNotFoundError(selector.base_dir)
            inside = pafs.FileSelector(name, allow_not_found=selector.allow_not_found, recursive=selector.recursive)
            return [self.outer(info) for info in super().get_file_info_selector(inside)]

        def member(self, path: str) -> str:
            if not (name := self.inner(path)):
                raise FileNotFoundError(path)
            return name

        def open_input_stream(self, path):
            return super().open_input_stream(self.member(path))

        def open_input_file(self, path):
            return super().open_input_file(self.member(path))

    try:
        fs = pafs.PyFileSystem(ZipHandler(ZipFileSystem(archive)))
        top = [] if member else [i for i in fs.get_file_info(pafs.FileSelector(archive))
                                 if not posixpath.basename(i.path).startswith((".", "_"))]  # __MACOSX/: not data
    except (zipfile.BadZipFile, OSError) as e:
        raise StorageError(f"cannot read {uri} as a zip archive: {_first_line(e)}") from None
    if len(top) == 1 and top[0].type == pafs.FileType.Directory:  # aclImdb.zip packing aclImdb/: read as that
        return fs, top[0].path
    return fs, posixpath.join(archive, member).rstrip("/")


def uri(fs, path: str) -> str:
    """The URI of a path inside a pyarrow filesystem (the inverse of filesystem())."""
    scheme = {"s3": "s3://", "gcs": "gs://"}.get(fs.type_name, "")
    return scheme + path


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return str(Path(uri).expanduser().resolve().joinpath(*parts))


# In a storage root (storage.path, the registry's): its runs, checkpoints and models are never read as data, as
# they were where the root is inside the data's folder (`orchestrator train .`: ./runs beside ./train.csv)
STORAGE_MARK = ".orchestrator-storage"


def check_writable(uri: str, endpoint_url: str | None = None, region: str | None = None, mark: bool = False) -> None:
    """Fail fast (StorageError) when the storage root cannot be written, before any work starts. With `mark`,
    the file written to find out stays: STORAGE_MARK, which reading data leaves out with all beside it."""
    fs, path = filesystem(uri, endpoint_url, region)
    probe = posixpath.join(path, STORAGE_MARK if mark else ".orchestrator-write-check")
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"orchestrator's runs, checkpoints and models: never read as data\n" if mark else b"ok")
        if not mark:
            fs.delete_file(probe)
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot write to storage {uri!r}: {_first_line(e)}") from None


def file_type(uri: str, endpoint_url: str | None = None, region: str | None = None, web: bool = False) -> str | None:
    """"file", "directory" (on S3 or GCS: a prefix that holds objects), or None where nothing is."""
    fs, path = filesystem(uri, endpoint_url, region, web)
    try:
        kind = fs.get_file_info(path).type.name
    except OSError as e:
        raise StorageError(f"cannot reach {uri!r}: {_first_line(e)}") from None
    return {"File": "file", "Directory": "directory"}.get(kind)


def web_failure(url: str) -> str:
    """Why an http(s) URL gives no file, in words: the server's answer (404 Not Found, 403 Forbidden), or why
    there was none (the host is unknown, the connection refused or timed out). fsspec reads every failure as
    FileNotFoundError, and pyarrow's wrapper of it keeps none of the cause."""
    import fsspec

    try:
        fsspec.filesystem("https").info(url)
    except FileNotFoundError as e:
        cause = e.__cause__
        if (status := getattr(cause, "status", None)) is not None:  # aiohttp's ClientResponseError
            return f"the server answered {status} {getattr(cause, 'message', '')}".rstrip()
        if cause is not None:  # aiohttp's ClientConnectorError and its DNS kind: the OSError they wrap says why
            reason = getattr(cause, "os_error", None) or cause
            said = os.strerror(reason.errno) if isinstance(reason, ConnectionError) and reason.errno else (
                getattr(reason, "strerror", None) or _first_line(reason))  # asyncio's refusal names no reason
            return f"the server did not answer ({said})"
        return "the server has no such file"
    except Exception as e:  # noqa: BLE001 (a timeout, a TLS failure: each says what it is)
        return f"the server did not answer ({_first_line(e)})"
    return "the server answered, with no file"


def read_bytes(uri: str, endpoint_url: str | None = None, region: str | None = None, web: bool = False) -> bytes:
    """The file's bytes as stored (pyarrow would decompress a .gz name's by default)."""
    fs, path = filesystem(uri, endpoint_url, region, web)
    with fs.open_input_stream(path, compression=None) as f:
        return f.read()


def write_bytes(uri: str, data: bytes, endpoint_url: str | None = None, region: str | None = None) -> None:
    fs, path = filesystem(uri, endpoint_url, region)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path, compression=None) as f:  # as given: not compressed again for a .gz name
        f.write(data)


def upload_dir(local_dir: str, uri: str, endpoint_url: str | None = None, region: str | None = None) -> None:
    """Copy a local directory's files to a directory URI (local or s3://)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, endpoint_url, region)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
