"""S3-compatible object storage for the partition store and the training checkpoints.

Credentials are never settings: boto3 and s3fs read them from the standard AWS chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, a profile, an instance
role). What is configured is where the server is (``s3.endpoint_url`` for MinIO or moto, or
``AWS_ENDPOINT_URL_S3`` when that is null), its region and the retry budget; these are the
fields of dagster-aws's ``S3Resource``, which builds the partition store's client in the code
location (``pulse_assets/defs/resources.py``).

A single S3 PUT is atomic: readers see the old object or the new one, never a part of it, and
a PUT cut off mid-body stores nothing. So an object store needs no temp-file-and-rename; a
rename there would be a copy and a delete, two requests that can fail apart.

Every botocore, s3fs or network failure becomes a :class:`StoreError` (or the caller's error
type) naming the bucket and key and what to do; the message is passed through
:func:`redact`, so a secret from the environment never reaches a log or an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from upath import UPath

from pulse_assets.config import S3Config
from pulse_assets.errors import StoreError

S3_PROTOCOLS = ("s3", "s3a")
LOCAL_PROTOCOLS = ("", "file", "local")
SECRET_NAME_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL")
# Query parameters of a presigned URL that carry a signature or a session token.
_SIGNED_QUERY = re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.I)
S3_FAILURES: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, OSError)
"""What a call to S3 raises when it fails: botocore's own errors, the server's answers, and
s3fs's translation of them into OSError subclasses."""


def is_s3_url(root: str | os.PathLike[str]) -> bool:
    return str(root).split("://", 1)[0].lower() in S3_PROTOCOLS and "://" in str(root)


def redact(text: str) -> str:
    """``text`` with the value of every secret-looking environment variable (a name holding
    SECRET, TOKEN, PASSWORD, KEY or CREDENTIAL) and every presigned signature masked."""
    for name, value in os.environ.items():
        if len(value) >= 8 and any(word in name.upper() for word in SECRET_NAME_WORDS):
            text = text.replace(value, "***")
    return _SIGNED_QUERY.sub(r"\1***", text)


def describe_failure(error: BaseException) -> str:
    """What went wrong, in one redacted line, with the hint an operator needs."""
    if isinstance(error, NoCredentialsError):
        hint = "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    elif isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        hint = f"the server answered {code}"
        if code in ("NoSuchBucket", "404"):
            hint += " (create the bucket or fix the URL)"
        elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            hint += " (check the credentials and the bucket policy)"
    elif isinstance(error, BotoCoreError | ConnectionError | TimeoutError):
        hint = "the S3 endpoint is unreachable (check s3.endpoint_url and that the server is up)"
    else:
        hint = "the request failed"
    return redact(f"{hint}: {type(error).__name__}: {error}")


def client_options(config: S3Config) -> dict[str, Any]:
    """Keyword arguments of ``boto3.client("s3", ...)`` for ``config`` (no credentials)."""
    return {
        "endpoint_url": config.endpoint_url,
        "region_name": config.region,
        "config": Config(retries={"max_attempts": config.max_attempts, "mode": "standard"}),
    }


def make_client(config: S3Config) -> Any:
    """A boto3 S3 client with the standard credential chain; thread-safe, so one per store.

    In the code location the client comes from dagster-aws's ``S3Resource`` instead; this one
    serves scripts and benchmarks that use the store without Dagster.
    """
    return boto3.session.Session().client("s3", **client_options(config))


def fsspec_options(config: S3Config) -> dict[str, Any]:
    """s3fs storage options for ``config``: endpoint, region, retries; listings never cached,
    so a checkpoint written by another process is seen at once."""
    client_kwargs = {
        key: value
        for key, value in (("endpoint_url", config.endpoint_url), ("region_name", config.region))
        if value is not None
    }
    return {
        "client_kwargs": client_kwargs,
        "config_kwargs": {"retries": {"max_attempts": config.max_attempts, "mode": "standard"}},
        "use_listings_cache": False,
    }


def open_root(root: str | os.PathLike[str] | UPath, config: S3Config | None = None) -> Path | UPath:
    """A local folder (or ``file://`` URL) as a ``Path``; an ``s3://`` URL as a ``UPath`` on
    s3fs configured by ``config``; any other fsspec URL, or a ``UPath`` given ready-made, as is."""
    if isinstance(root, UPath) and root.protocol not in LOCAL_PROTOCOLS:
        return root
    text = str(root)
    if is_s3_url(text):
        return UPath(text, **fsspec_options(config or S3Config()))
    if text.startswith("file://"):
        return Path(UPath(text).path)
    return UPath(text) if "://" in text else Path(text)


@dataclass(frozen=True)
class S3Objects:
    """Objects under ``s3://bucket/prefix`` through one boto3 client: atomic puts, gets, lists."""

    client: Any
    bucket: str
    prefix: str

    @classmethod
    def at(cls, url: str, client: Any) -> S3Objects:
        location = url.split("://", 1)[1].strip("/")
        bucket, _, prefix = location.partition("/")
        if not bucket:
            raise StoreError(f"S3 URL {url!r} names no bucket; use s3://bucket/prefix")
        return cls(client, bucket, prefix)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    def put(self, relative: str, payload: bytes) -> None:
        """One PUT: the object is replaced whole or, on any failure, not at all."""
        self._call(
            "write",
            relative,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self.key(relative), Body=payload
            ),
        )

    def get(self, relative: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))
            return bytes(response["Body"].read())

        return self._call("read", relative, read)

    def names(self, relative_folder: str) -> list[str]:
        """Names of the objects directly inside ``relative_folder`` (one level, sorted)."""
        folder = self.key(relative_folder).rstrip("/") + "/"

        def listing() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder, Delimiter="/"
            )
            return sorted(
                item["Key"][len(folder) :] for page in pages for item in page.get("Contents", [])
            )

        return self._call("list", relative_folder, listing)

    def _call(self, action: str, relative: str, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except S3_FAILURES as error:
            # Not chained: the cause's text is in the message, redacted; a chained botocore
            # error would print it again unredacted in every traceback.
            raise StoreError(
                f"could not {action} {self.url(relative)}: {describe_failure(error)}"
                + ("; the previous object, if any, is unchanged" if action == "write" else "")
            ) from None


def put_object(path: UPath, payload: bytes) -> None:
    """``payload`` as the object at ``path`` in one PUT through fsspec (s3fs sends anything
    under 100 MB as a single ``put_object``; larger ones as a multipart upload, which also
    appears only when complete)."""
    path.fs.pipe_file(path.path, payload)
