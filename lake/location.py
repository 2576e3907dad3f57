"""Where a lake lives when it is not a local folder: a path on a pyarrow filesystem.

A lake's root is a `pathlib.Path` for a folder on this machine (`/path`, `~/lake`, `file:///path`)
and a `Location` for anything pyarrow's filesystems reach by URI: `s3://bucket/lake` (S3 and
every S3-protocol store: MinIO, OSS, moto), `gs://bucket/lake`, `hdfs://namenode/lake`.
`Location` has the part of `Path`'s interface the lake uses (`/`, `name`, `parent`, `is_dir`,
`iterdir`, `glob`, `stat`, `read_text`, `write_text`, `relative_to`, …), so the lake's code reads
the same for both; what a filesystem cannot do the way a disk does is said where it matters:

- an object store has no atomic rename: a single object is replaced atomically by one PUT, a
  folder of several is not (lake/store.py writes a remote partition file by file, see `Lake.write`);
- folders exist only as prefixes of objects: `mkdir` does what the store allows, an empty folder
  may not be listed;
- a file's modification time is the store's (S3: to the second).

Credentials and endpoints come from the environment, as pyarrow reads them (for S3:
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for a
store other than AWS), so a Ray worker that has the same environment reaches the same lake.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def lake_root(root: str | os.PathLike[str] | Location) -> Path | Location:
    """The root of a lake given as a folder or a URI: a local `Path` (resolved) for a folder or a
    `file://` URI, a `Location` for every other scheme pyarrow knows."""
    if isinstance(root, Location):
        return root
    text = os.fspath(root)
    scheme = urlparse(text).scheme if "://" in text else ""
    if scheme in ("", "file"):
        return Path(urlparse(text).path if scheme else text).expanduser().resolve()
    return Location.from_uri(text)


def is_remote(path: Path | Location) -> bool:
    return isinstance(path, Location)


# what a process needs to reach a lake on a store: the store's endpoint and keys as pyarrow reads
# them, and where the lake's catalog is (lake/tables.py)
STORE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
             "AWS_ENDPOINT_URL", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "QUANYU_HOME", "QUANYU_CATALOG_URI")


def store_env(root: Path | Location) -> dict[str, str]:
    """The variables of this process's environment that a Ray task needs to reach the lake at
    `root` as this process does ({} for a local lake): they travel in the task's runtime
    environment, so a cluster started without them still reaches the store."""
    if not isinstance(root, Location):
        return {}
    return {name: os.environ[name] for name in STORE_ENV if os.environ.get(name)}


def task_options(root: Path | Location) -> dict:
    """Ray options for a task that reads or writes the lake at `root`: `store_env` in its runtime
    environment ({} for a local lake)."""
    env = store_env(root)
    return {"runtime_env": {"env_vars": env}} if env else {}


def arrow_path(path: Path | Location) -> tuple[str, pafs.FileSystem | None]:
    """(path, filesystem) for pyarrow's readers and writers (`pq.read_table(path, filesystem=…)`)."""
    return (path.path, path.fs) if isinstance(path, Location) else (str(path), None)


def parquet_file(path: Path | Location) -> pq.ParquetFile:
    """A Parquet file's footer and reader, wherever it is."""
    source, fs = arrow_path(path)
    return pq.ParquetFile(source, filesystem=fs)


def read_parquet(path: Path | Location, columns: list[str] | None = None) -> pa.Table:
    source, fs = arrow_path(path)
    return pq.read_table(source, filesystem=fs, columns=columns)


def read_files(paths: list[Path | Location], schema: pa.Schema) -> pa.Table:
    """Parquet files (of one filesystem) as one table of `schema`'s columns, in the order given,
    read in parallel; a file whose types differ (large strings) is cast to `schema`'s."""
    sources = [arrow_path(p) for p in paths]
    dataset = ds.dataset([s for s, _ in sources], schema=schema, format="parquet", filesystem=sources[0][1])
    return dataset.to_table()


def write_parquet(data: pa.Table, path: Path | Location) -> None:
    source, fs = arrow_path(path)
    pq.write_table(data, source, filesystem=fs, compression="zstd")


def copy_file(source: str, target: Path | Location) -> None:
    """Copy the file at URI or path `source` (a table's data file) to `target`, byte for byte."""
    fs, path = pafs.FileSystem.from_uri(source) if "://" in source else (pafs.LocalFileSystem(), source)
    destination, target_fs = arrow_path(target)
    pafs.copy_files(path, destination, source_filesystem=fs, destination_filesystem=target_fs or pafs.LocalFileSystem())


class Location:
    """A path on a pyarrow filesystem, named by its URI (`str(location)`). Cheap to pickle: it
    pickles as its URI and finds its filesystem again where it lands (a Ray worker)."""

    def __init__(self, scheme: str, netloc: str, path: str, fs: pafs.FileSystem | None = None,
                 info: pafs.FileInfo | None = None) -> None:
        self.scheme, self.netloc = scheme, netloc
        self.path = path.rstrip("/") or path  # the filesystem's own path: "bucket/lake/raw" on S3
        self._fs = fs
        self._listed = info  # what a listing said of it (iterdir): no request per child

    @classmethod
    def from_uri(cls, uri: str) -> Location:
        parsed = urlparse(uri)
        fs, path = pafs.FileSystem.from_uri(uri)
        return cls(parsed.scheme, parsed.netloc, path, fs)

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs = pafs.FileSystem.from_uri(str(self))[0]
        return self._fs

    def __reduce__(self):
        return (Location.from_uri, (str(self),))

    # --- naming -------------------------------------------------------------------------------
    def __str__(self) -> str:
        # S3 and GCS paths start with the bucket, which is the URI's netloc; HDFS keeps its host
        if self.scheme in ("s3", "gs", "gcs"):
            return f"{self.scheme}://{self.path}"
        return f"{self.scheme}://{self.netloc}/{self.path.lstrip('/')}"

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: Location) -> bool:  # sorted() of files, by name as on disk
        return self.path < other.path

    def as_uri(self) -> str:
        return str(self)

    def _child(self, path: str, info: pafs.FileInfo | None = None) -> Location:
        return Location(self.scheme, self.netloc, path, self._fs, info)

    def __truediv__(self, part: str | os.PathLike[str]) -> Location:
        return self._child(f"{self.path}/{os.fspath(part).strip('/')}")

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> Location:
        return self._child(str(PurePosixPath(self.path).parent))

    def relative_to(self, other: Location) -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(PurePosixPath(other.path))

    # --- what is there ------------------------------------------------------------------------
    def _info(self) -> pafs.FileInfo:
        return self._listed or self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def stat(self) -> SimpleNamespace:
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{self} does not exist")
        mtime_ns = info.mtime_ns or 0
        return SimpleNamespace(st_size=info.size or 0, st_mtime_ns=mtime_ns, st_mtime=mtime_ns / 1e9)

    def iterdir(self) -> list[Location]:
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return [self._child(i.path, i) for i in infos]

    def glob(self, pattern: str) -> list[Location]:
        """The children whose names match `pattern` (one level: `*.parquet`, `dt=*`)."""
        return [c for c in self.iterdir() if fnmatch.fnmatchcase(c.name, pattern)]

    # --- reading and writing ------------------------------------------------------------------
    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if self.exists() and not exist_ok:
            raise FileExistsError(f"{self} exists")
        self.fs.create_dir(self.path, recursive=parents)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        self.fs.delete_file(self.path)

    def rmtree(self) -> None:
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def move(self, destination: Location) -> None:
        """Copy then delete (object stores have no rename of a folder): a reader may see both
        for a moment, never neither."""
        if self.is_dir():
            pafs.copy_files(self.path, destination.path, source_filesystem=self.fs, destination_filesystem=destination.fs)
            self.rmtree()
        else:
            self.fs.copy_file(self.path, destination.path)
            self.unlink()
