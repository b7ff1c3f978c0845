"""An artifact as one file: a tar archive of its directory (`kgen compile --archive`).

`kgen.load` takes the archive itself: it unpacks it into a private temporary directory and
checks it there like any artifact (every file against the manifest's hashes). Only plain
files with relative paths inside the archive are unpacked; anything else (links, devices,
absolute or `..` paths) makes the archive an ArtifactError, never a write outside it."""
from __future__ import annotations

import atexit
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from kgen.artifact.manifest import MANIFEST, ArtifactError


def is_archive(path) -> bool:
    return Path(path).is_file()


def pack(directory, archive=None) -> Path:
    """Write the artifact `directory` as one tar file (default: the directory's name plus
    `.tar`), atomically. Returns its path."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise ArtifactError(f"{directory}: not an artifact directory (no {MANIFEST})")
    archive = Path(archive) if archive is not None else directory.with_name(directory.name + ".tar")
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            for path in sorted(p for p in directory.rglob("*") if p.is_file()):
                tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive


def unpack(archive) -> Path:
    """The archive's files in a new temporary directory, removed when the process exits
    (a loaded artifact may read its files until then)."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, "r:")
    except (tarfile.TarError, OSError) as e:
        raise ArtifactError(f"{archive}: not a readable artifact archive ({e})") from None
    target = Path(tempfile.mkdtemp(prefix="kgen-artifact-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    with tar:
        try:
            members = tar.getmembers()
        except tarfile.TarError as e:
            raise ArtifactError(f"{archive}: truncated or corrupt archive ({e})") from None
        for member in members:
            name = Path(member.name)
            if not member.isfile() or name.is_absolute() or ".." in name.parts:
                raise ArtifactError(f"{archive}: member {member.name!r} is not a plain file inside the artifact")
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            try:
                dest.write_bytes(source.read())
            except (tarfile.TarError, OSError) as e:
                raise ArtifactError(f"{archive}: member {member.name!r} cannot be read ({e})") from None
    return target
