"""Dropping root after start-up: `server.user` / `server.group`.

Owns resolving the configured user and group (a name that does not exist
is a `ConfigError` at start), handing the server's files to that user
(data_dir, walked; only what is not already theirs; the log file and the
control socket's directory), and switching the process to them:
supplementary groups, then the group, then the user (the only safe order:
after setuid the process may no longer change its groups). The server
calls it once, as root, after binding the ports below 1024 and preparing
data_dir and the certificate, and before forking workers. Asked to drop
and unable to, it raises instead of running on as root.
"""

from __future__ import annotations

import contextlib
import grp
import importlib
import logging
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from goniec.errors import ConfigError
from goniec.obs.log import log_event

log = logging.getLogger("goniec.app")


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve(user: str, group: str = "") -> Identity:
    """The uid/gid of `user` (and `group`, else the user's primary group)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"server.user: no such user {user!r} on this system") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"server.group: no such group {group!r} on this system") from None
    groups = tuple(dict.fromkeys([gid, *os.getgrouplist(user, gid)]))
    return Identity(user, pw.pw_uid, gid, groups)


def _chown_tree(root: Path, uid: int, gid: int) -> int:
    """Give `root` and everything below to uid:gid (symlinks not followed); returns how many."""
    changed = 0

    def fix(path: str) -> None:
        nonlocal changed
        st = os.lstat(path)
        if st.st_uid != uid or st.st_gid != gid:
            os.lchown(path, uid, gid)
            changed += 1

    if not root.exists():
        return 0
    fix(str(root))
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            fix(os.path.join(top, name))
    return changed


def log_folder(log_file: Path) -> Path | None:
    """The log's folder when it is Goniec's own (it holds only the log, its rotated
    copies and the rotation lock), so that it may be handed to the server's user:
    rotating and reopening after logrotate create files there. None for a shared
    folder such as /var/log, which is never changed."""
    folder = log_file.parent
    if not folder.is_dir():
        return None
    stem = log_file.name
    for entry in os.scandir(folder):
        if not (entry.name.startswith(stem) or entry.name.startswith(".__" + log_file.stem)):
            return None
    return folder


def drop(user: str, group: str, data_dir: Path, extra: Iterable[Path] = ()) -> Identity | None:
    """Switch to `user` (ConfigError when it does not exist); None when there is nothing to do.

    `extra`: more paths the user must own (the log file, the control socket's
    directory); a directory among them is walked like data_dir.
    """
    if not user:
        if os.geteuid() == 0:
            log_event(log, "running_as_root", level=logging.WARNING,
                      hint="set server.user to drop privileges after binding")
        return None
    ident = resolve(user, group)
    if os.geteuid() != 0:
        if os.geteuid() != ident.uid:
            raise ConfigError(f"server.user = {user!r}: started as uid {os.geteuid()}, not root,"
                              " so the server cannot switch to that user")
        return None
    changed = _chown_tree(data_dir, ident.uid, ident.gid)
    for path in extra:
        changed += _chown_tree(path, ident.uid, ident.gid)
    os.setgroups(list(ident.groups))
    os.setgid(ident.gid)
    os.setuid(ident.uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - setuid left a way back: never run like that
        raise ConfigError(f"server.user = {user!r}: could not drop root for good")
    log_event(log, "privileges_dropped", user=user, uid=ident.uid, gid=ident.gid,
              chowned=changed)
    return ident


# Modules the server imports lazily after start-up. Imported before the drop, so
# that an interpreter installed where the server's user cannot read (a venv under
# /root) still has them; a missing optional one is fine.
_LATE_IMPORTS = (
    "uvloop", "goniec.server.rdns", "goniec.delivery.dns", "goniec.delivery.service",
    "goniec.admin.runtime", "goniec.admin.service", "goniec.admin.queue_ops",
    "goniec.admin.message_view", "goniec.obs.metrics", "goniec.obs.logsearch",
    "goniec.obs.trail",
)


def preload(web: bool) -> None:
    for name in _LATE_IMPORTS + (("goniec.admin.web",) if web else ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
