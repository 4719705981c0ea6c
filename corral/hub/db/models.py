"""The hub's tables. Every row that belongs to a bucket carries `bucket_id` (directly or
through its server), and every query the routes make filters by it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    """A hub administrator may create buckets; it sees no bucket it is not a member of."""
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the cookie's token: a stolen database yields no live session."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(64), default="")


class Bucket(Base):
    __tablename__ = "buckets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    sealed_keys: Mapped[str] = mapped_column(Text)
    """BucketKeys sealed with AES-256-GCM under hub.key (AAD = public id); never the secret."""
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    retention_days: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    bucket_id: Mapped[int] = mapped_column(
        ForeignKey("buckets.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))


class Server(Base):
    __tablename__ = "servers"
    __table_args__ = (UniqueConstraint("bucket_id", "server_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"))
    server_id: Mapped[str] = mapped_column(String(32))
    """The agent's own 128-bit id (hello): a renamed host stays one server."""
    hostname: Mapped[str] = mapped_column(String(253))
    addresses: Mapped[str] = mapped_column(Text, default="[]")
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    remote_actions: Mapped[bool] = mapped_column(Boolean, default=False)
    password_params: Mapped[str | None] = mapped_column(Text, default=None)
    """The agent password's public argon2 salt and costs (hello); never a key or hash."""
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_metrics: Mapped[str | None] = mapped_column(Text, default=None)
    """The latest metrics body as received (live values without a query over samples)."""


class ServerSample(Base):
    __tablename__ = "server_samples"
    __table_args__ = (Index("ix_server_samples_server_at", "server_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Float, index=True)
    load1: Mapped[float] = mapped_column(Float)
    cpu_percent: Mapped[float] = mapped_column(Float)
    memory_total: Mapped[int] = mapped_column(BigInteger)
    memory_available: Mapped[int] = mapped_column(BigInteger)
    swap_used: Mapped[int] = mapped_column(BigInteger)


class AppSample(Base):
    __tablename__ = "app_samples"
    __table_args__ = (Index("ix_app_samples_server_name_at", "server_id", "name", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Float, index=True)
    name: Mapped[str] = mapped_column(String(80))
    app_id: Mapped[int] = mapped_column(Integer)
    instance: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    cpu: Mapped[float | None] = mapped_column(Float, default=None)
    memory: Mapped[int | None] = mapped_column(BigInteger, default=None)
    restarts: Mapped[int] = mapped_column(BigInteger)
    unstable_restarts: Mapped[int] = mapped_column(BigInteger)
    exec_mode: Mapped[str] = mapped_column(String(8))
    git_revision: Mapped[str | None] = mapped_column(String(64), default=None)
    custom: Mapped[str] = mapped_column(Text, default="{}")


class Action(Base):
    __tablename__ = "actions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="SET NULL"), default=None
    )
    hostname: Mapped[str] = mapped_column(String(253))
    verb: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(80))
    requested_by: Mapped[str] = mapped_column(String(64))
    with_proof: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether a password proof went with it: never the password or the proof."""
    state: Mapped[str] = mapped_column(String(16))
    """sent | ok | refused | undeliverable | lost"""
    code: Mapped[str | None] = mapped_column(String(32), default=None)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """crash_loop (threshold restarts within window_seconds) | memory (MiB) | silent (minutes)"""
    threshold: Mapped[int] = mapped_column(Integer)
    window_seconds: Mapped[int] = mapped_column(Integer, default=300)


class AlertEvent(Base):
    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"), index=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    app: Mapped[str | None] = mapped_column(String(80), default=None)
    state: Mapped[str] = mapped_column(String(16))
    """firing | resolved"""
    message: Mapped[str] = mapped_column(Text)
    started_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float, default=None)
    webhook_status: Mapped[str] = mapped_column(String(64), default="")


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[str | None] = mapped_column(String(64), default=None)
    action: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str] = mapped_column(String(64), default="")
