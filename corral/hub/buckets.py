"""Buckets: made with a fresh public id and secret; the hub keeps only the derived keys,
sealed under hub.key. The secret is returned once, for the caller to show."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from corral.hub.accounts import AccountError, set_role
from corral.hub.db.models import Bucket, User
from corral.hub.roles import Role
from corral.hub.sealing import Sealer
from corral.protocol.hub import BucketKeys, derive_bucket_keys, new_public_id, new_secret
from corral.protocol.hub.keys import PUBLIC_ID_RE

MAX_NAME = 64


@dataclass(frozen=True, repr=False)
class NewBucket:
    id: int
    public_id: str
    name: str
    secret: str
    """Shown once; not stored anywhere."""

    def __repr__(self) -> str:
        return f"NewBucket(public_id={self.public_id!r}, <secret hidden>)"


def check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise AccountError(f"a bucket name is 1 to {MAX_NAME} printable characters")
    return name


def create_bucket(
    db: DbSession, sealer: Sealer, name: str, owner: User, retention_days: float
) -> NewBucket:
    name = check_name(name)
    public_id = new_public_id()
    secret = new_secret()
    keys = derive_bucket_keys(public_id, secret)
    bucket = Bucket(
        public_id=public_id,
        name=name,
        sealed_keys=sealer.seal(keys),
        retention_days=retention_days,
        created_at=time.time(),
    )
    db.add(bucket)
    db.flush()
    set_role(db, owner.id, bucket.id, Role.OWNER)
    return NewBucket(bucket.id, public_id, name, secret)


def find_bucket(db: DbSession, public_id: str) -> Bucket | None:
    if not PUBLIC_ID_RE.fullmatch(public_id):
        return None
    return db.scalar(select(Bucket).where(Bucket.public_id == public_id))


def bucket_keys(db: DbSession, sealer: Sealer, public_id: str) -> tuple[int, BucketKeys] | None:
    """(bucket id, keys) for the handshake, or None for an unknown bucket."""
    bucket = find_bucket(db, public_id)
    if bucket is None:
        return None
    return bucket.id, sealer.open(public_id, bucket.sealed_keys)
