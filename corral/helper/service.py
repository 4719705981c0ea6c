"""The helper's verbs (corral.protocol.helper.HelperVerb), on arguments already validated.

Each verb either does all of its work or raises ProtocolError; a create that fails midway
undoes what it did. Requests for one tenant run one at a time; user and group changes and
registry writes run one at a time over all tenants.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import threading
import time
from collections.abc import Iterator
from typing import Any, assert_never

from corral import __version__
from corral.helper import accounts, homes, procs
from corral.helper.accounts import Tools
from corral.helper.config import HelperConfig
from corral.helper.daemons import Daemons, Started
from corral.helper.registry import Registry, TenantRecord
from corral.protocol.helper import (
    HelperVerb,
    PingResult,
    RemoveResult,
    StopResult,
    TenantInfo,
)
from corral.protocol.wire import ErrorCode, ProtocolError

log = logging.getLogger("corral.helper")


class Helper:
    def __init__(
        self, config: HelperConfig, registry: Registry, daemons: Daemons, tools: Tools
    ) -> None:
        self.config = config
        self.registry = registry
        self.daemons = daemons
        self.tools = tools
        self._accounts = threading.Lock()
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def dispatch(self, verb: HelperVerb, args: dict[str, Any]) -> tuple[Any, str]:
        """The verb's result and a one-line detail for the audit log."""
        if verb is HelperVerb.PING:
            return self.ping(), "ping"
        name: str = args["tenant"]
        if verb is HelperVerb.CREATE_TENANT:
            info = self.create_tenant(name)
            return info, f"created user {name} (uid {info['uid']}) with home {info['home']}"
        if verb is HelperVerb.START_DAEMON:
            done = self.start_daemon(name, args["app_limit"])
            started = done.result
            what = "started" if started["started"] else "already running"
            detail = f"daemon {what} (pid {started['pid']}), app limit {args['app_limit']}"
            for replaced in done.replaced:
                detail += f"; replaced a daemon the tenant started itself ({replaced})"
            return started, detail
        if verb is HelperVerb.STOP_DAEMON:
            stopped = self.stop_daemon(name)
            return stopped, "daemon stopped" if stopped["stopped"] else "no daemon was running"
        if verb is HelperVerb.REMOVE_TENANT:
            removed = self.remove_tenant(name, args["delete_home"])
            kept = "home deleted" if removed["home_deleted"] else "home kept (root's, 0700)"
            return removed, f"tenant removed, {kept}"
        assert_never(verb)

    @contextlib.contextmanager
    def _tenant_lock(self, name: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._tenant_locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def _registered(self, name: str) -> TenantRecord:
        record = self.registry.get(name)
        if record is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"no tenant named {name!r}: the helper only acts on tenants it created",
            )
        return record

    def _known(self, name: str) -> TenantRecord:
        """The registry's record of `name`, which must still be the same system user."""
        record = self._registered(name)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ProtocolError(
                ErrorCode.CONFLICT, f"tenant {name!r}: its system user no longer exists"
            ) from None
        if (entry.pw_uid, entry.pw_gid) != (record.uid, record.gid):
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"tenant {name!r}: its system user now has uid {entry.pw_uid} gid "
                f"{entry.pw_gid}, not the uid {record.uid} gid {record.gid} it was created "
                "with; nothing done",
            )
        return record

    # --- verbs --------------------------------------------------------------------

    def ping(self) -> PingResult:
        return {
            "version": __version__,
            "panel_uid": self.config.panel_uid,
            "tenants_dir": str(self.config.tenants_dir),
        }

    def create_tenant(self, name: str) -> TenantInfo:
        home = self.config.home_of(name)
        with self._tenant_lock(name), self._accounts:
            if self.registry.get(name) is not None:
                raise ProtocolError(ErrorCode.CONFLICT, f"tenant {name!r} already exists")
            why = accounts.taken(name)
            if why is not None:
                raise ProtocolError(ErrorCode.CONFLICT, why)
            if os.path.lexists(home):
                raise ProtocolError(ErrorCode.CONFLICT, f"{home} already exists")
            entry = accounts.add_user(self.tools, name, home)
            made_home = False
            try:
                homes.make_home(home, entry.pw_uid, self.config.panel_gid)
                made_home = True
                self.registry.add(TenantRecord(name, entry.pw_uid, entry.pw_gid, home, time.time()))
            except BaseException as exc:
                if made_home:
                    homes.discard_new_home(home)
                undone = self._undo_user(name)
                if isinstance(exc, OSError):
                    left = "nothing was left behind" if undone else f"user {name} is left over"
                    raise ProtocolError(
                        ErrorCode.INTERNAL, f"cannot create tenant {name!r}: {exc}; {left}"
                    ) from None
                raise
        log.info("created tenant %s (uid %d)", name, entry.pw_uid)
        return {
            "tenant": name,
            "user": name,
            "uid": entry.pw_uid,
            "gid": entry.pw_gid,
            "home": str(home),
        }

    def _undo_user(self, name: str) -> bool:
        try:
            accounts.delete_user(self.tools, name)
        except ProtocolError as exc:
            log.error("could not undo the user %s of a failed create: %s", name, exc.message)
            return False
        return True

    def start_daemon(self, name: str, app_limit: int) -> Started:
        """Start the tenant's daemon, replacing one the panel cannot use (`Started`)."""
        with self._tenant_lock(name):
            record = self._known(name)
            homes.ensure_corral_dir(record.home, record.uid, self.config.panel_gid)
            return self.daemons.start(record, app_limit)

    def stop_daemon(self, name: str) -> StopResult:
        with self._tenant_lock(name):
            return self.daemons.stop(self._known(name))

    def remove_tenant(self, name: str, delete_home: bool) -> RemoveResult:
        with self._tenant_lock(name):
            record = self._registered(name)
            if _user_gone(record):
                return self._forget(record)
            record = self._known(name)
            try:
                self.daemons.stop(record)
            except ProtocolError as exc:  # it is killed below anyway
                log.warning("removing %s: %s", name, exc.message)
            try:
                procs.kill_uid(record.uid)
            except OSError as exc:
                raise ProtocolError(ErrorCode.INTERNAL, f"removing {name!r}: {exc}") from None
            self.daemons.reap()
            if delete_home:
                homes.remove_home(record.home, record.uid, record.gid, self.config.python)
            else:
                homes.retire_home(record.home)
            with self._accounts:
                accounts.delete_user(self.tools, name)
                self._unregister(name)
        log.info("removed tenant %s", name)
        return {"removed": True, "home_deleted": delete_home}

    def _forget(self, record: TenantRecord) -> RemoveResult:
        """A registered tenant whose user and uid are gone (deleted by hand, or a remove
        that failed at the registry write): drop the entry. Its uid may belong to nobody
        or be reused later, so nothing is done as that uid; a home left over is closed."""
        homes.retire_home(record.home)
        with self._accounts:
            self._unregister(record.name)
        log.info("forgot tenant %s (its user was already gone)", record.name)
        return {"removed": True, "home_deleted": False}

    def _unregister(self, name: str) -> None:
        try:
            self.registry.remove(name)
        except OSError as exc:
            raise ProtocolError(
                ErrorCode.INTERNAL,
                f"tenant {name!r} was removed but the registry could not be written: {exc}",
            ) from None


def _user_gone(record: TenantRecord) -> bool:
    """Neither the name nor the uid is a user any more."""
    try:
        pwd.getpwnam(record.name)
        return False
    except KeyError:
        pass
    try:
        pwd.getpwuid(record.uid)
        return False
    except KeyError:
        return True
