"""The panel's tables. Times are UNIX seconds (float): portable across SQLite and
PostgreSQL and trivially comparable; the UI formats them.

Secrets never live here in clear: passwords are argon2id hashes, session ids and API
tokens are stored as their SHA-256, webhook tokens likewise (SPEC 2.4, 4).
"""

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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    """Lower-case; compared case-insensitively by lower-casing input."""
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[float] = mapped_column(Float)
    password_changed_at: Mapped[float] = mapped_column(Float)

    grants: Mapped[list[Grant]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    home: Mapped[str] = mapped_column(Text)
    """The tenant's home directory; its daemon lives in <home>/.corral."""
    app_limit: Mapped[int] = mapped_column(Integer, default=-1)
    """-1 unlimited, 0 none (SPEC 2.2)."""
    system_user: Mapped[str | None] = mapped_column(String(32), default=None)
    """Set when the tenant runs under its own system user (isolated mode)."""
    created_at: Mapped[float] = mapped_column(Float)

    grants: Mapped[list[Grant]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", passive_deletes=True
    )


class Grant(Base):
    """One right of one user on one tenant: access, control, logs or manage (SPEC 2.3)."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("user_id", "tenant_id", "right"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    right: Mapped[str] = mapped_column(String(16))

    user: Mapped[User] = relationship(back_populates="grants")
    tenant: Mapped[Tenant] = relationship(back_populates="grants")


class Session(Base):
    """A server-side login session; the cookie holds a token whose SHA-256 is `id`."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")


class ApiToken(Base):
    """A personal API token (SPEC 2.7): only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, default=None)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)


class AuditEntry(Base):
    """SPEC 2.6: who, when, from where, tenant, app, action, result."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_tenant_at", "tenant", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    """A user name, "anonymous" or "webhook"."""
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    address: Mapped[str] = mapped_column(String(64), default="")
    tenant: Mapped[str | None] = mapped_column(String(32), default=None)
    app: Mapped[str | None] = mapped_column(String(128), default=None)
    action: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(16))
    """"ok", "denied" or "failed"."""
    detail: Mapped[str] = mapped_column(Text, default="")


class MetricSample(Base):
    """CPU and memory of one app at one time, sampled by the panel (SPEC 2.5)."""

    __tablename__ = "metric_samples"
    __table_args__ = (
        Index("ix_metrics_app_at", "tenant_id", "app", "at"),
        Index("ix_metrics_at", "at"),  # the retention delete scans by time alone
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    app: Mapped[str] = mapped_column(String(128))
    at: Mapped[float] = mapped_column(Float)
    cpu: Mapped[float] = mapped_column(Float)
    """Percent of one core, summed over the app's instances."""
    memory: Mapped[int] = mapped_column(BigInteger)
    """Bytes (RSS), summed over the app's instances."""
    instances: Mapped[int] = mapped_column(Integer, default=0)


class Setting(Base):
    """Panel-wide settings an admin changes in the UI (JSON values)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DeployHook(Base):
    """An app's deploy webhook (SPEC 4): `public_id` is the `<app id>` of its URL. The token
    is kept as its SHA-256 (`token_sha256`) for the header formats, and sealed with
    AES-256-GCM under the panel's key file (`signing_key`, bound to `public_id`) because a
    GitHub signature needs the secret itself: the database alone never yields a token."""

    __tablename__ = "deploy_hooks"
    __table_args__ = (UniqueConstraint("tenant_id", "app"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    app: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64))
    signing_key: Mapped[str] = mapped_column(Text)
    """JSON {"kid", "nonce", "ct"} (corral.secrets.cipher.Sealed)."""
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))
    rotated_at: Mapped[float | None] = mapped_column(Float, default=None)
    last_used_at: Mapped[float | None] = mapped_column(Float, default=None)
