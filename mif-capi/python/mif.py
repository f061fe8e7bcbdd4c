"""The MIF API for Python: the PvDs of a host steered by mif, a PvD per
socket or per process, names resolved through a PvD's resolvers, and
Happy Eyeballs across PvDs.

A thin layer over libmif (the C ABI of mif-api, include/mif.h) with
ctypes: nothing to compile. The library is found by $MIF_LIBRARY (a path),
else as the system's libmif.so.0.

    import socket, mif
    s = socket.socket()
    mif.set_socket_pvd(s, "wwan0")        # this socket leaves by wwan0
    s.connect(("192.0.2.1", 80))
    print(mif.socket_pvd(s))              # "wwan0"

    conn = mif.connect("example.org", 443)   # races the PvDs I may use
    print(conn.pvd, conn.address)

Errors raise MifError, an OSError whose errno is the C call's (ENOENT: no
such PvD, EPERM: not allowed by the caller's policy, ENETUNREACH: not
available for the socket's family, ENOPROTOOPT: mif not running).
"""
import ctypes
import ctypes.util
import os
import socket
from dataclasses import dataclass, field
from typing import List, Optional

__all__ = [
    "MifError", "Pvd", "Connection", "Watch", "SOL_MIF", "MIF_PVD",
    "pvds", "set_socket_pvd", "socket_pvd", "set_process_pvd", "resolve", "connect",
]

SOL_MIF = 0x6D6966
MIF_PVD = 1
EVENT_PVD = 1
EVENT_POLICIES = 2


class MifError(OSError):
    """A failed libmif call: errno as the C call set it, and its message."""


def _load():
    path = os.environ.get("MIF_LIBRARY") or ctypes.util.find_library("mif") or "libmif.so.0"
    return ctypes.CDLL(path, use_errno=True)


_lib = _load()


class _ConnectOptions(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("attempt_delay_ms", ctypes.c_uint32),
        ("timeout_ms", ctypes.c_uint32),
        ("resolution_delay_ms", ctypes.c_uint32),
        ("pvd", ctypes.c_char_p),
    ]


class _Connection(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_int),
        ("pvd", ctypes.c_char * 16),
        ("address", ctypes.c_char * 46),
        ("port", ctypes.c_uint16),
        ("attempts", ctypes.c_uint32),
    ]


def _sig(name, restype, *argtypes):
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_p = ctypes.c_void_p
_s = ctypes.c_char_p
_last_error = _sig("mif_last_error", _s)
_set_pvd = _sig("mif_socket_set_pvd", ctypes.c_int, ctypes.c_int, _s)
_get_pvd = _sig("mif_socket_get_pvd", ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_set_process = _sig("mif_set_process_pvd", ctypes.c_int, _s)
_pvds = _sig("mif_pvds", _p)
_count = _sig("mif_pvd_list_count", ctypes.c_size_t, _p)
_get = _sig("mif_pvd_list_get", _p, _p, ctypes.c_size_t)
_free = _sig("mif_pvd_list_free", None, _p)
_name = _sig("mif_pvd_name", _s, _p)
_interface = _sig("mif_pvd_interface", _s, _p)
_kind = _sig("mif_pvd_kind", _s, _p)
_available = _sig("mif_pvd_available", ctypes.c_int, _p, ctypes.c_int)
_validation = _sig("mif_pvd_validation", _s, _p, ctypes.c_int)
_addresses = _sig("mif_pvd_addresses", _p, _p)
_resolvers = _sig("mif_pvd_resolvers", _p, _p)
_domains = _sig("mif_pvd_domains", _p, _p)
_strings_count = _sig("mif_strings_count", ctypes.c_size_t, _p)
_strings_get = _sig("mif_strings_get", _s, _p, ctypes.c_size_t)
_strings_free = _sig("mif_strings_free", None, _p)
_resolve = _sig("mif_resolve", _p, _s, _s)
_connect = _sig("mif_connect", ctypes.c_int, _s, ctypes.c_uint16,
                ctypes.POINTER(_ConnectOptions), ctypes.POINTER(_Connection))
_watch_open = _sig("mif_watch_open", _p)
_watch_fd = _sig("mif_watch_fd", ctypes.c_int, _p)
_watch_next = _sig("mif_watch_next", ctypes.c_int, _p, ctypes.c_char_p, ctypes.c_size_t)
_watch_close = _sig("mif_watch_close", None, _p)


def _fail():
    err = ctypes.get_errno()
    message = (_last_error() or b"").decode(errors="replace")
    raise MifError(err, message or os.strerror(err))


def _fd(sock):
    return sock if isinstance(sock, int) else sock.fileno()


def _text(value):
    return value.decode(errors="replace") if value else None


def _strings(handle):
    return [_strings_get(handle, i).decode() for i in range(_strings_count(handle))]


@dataclass
class Pvd:
    """One provisioning domain, as the daemon sees it now."""
    name: str
    interface: str
    kind: str
    available_v4: bool
    available_v6: bool
    validation_v4: Optional[str]
    validation_v6: Optional[str]
    addresses: List[str] = field(default_factory=list)
    resolvers: List[str] = field(default_factory=list)
    domains: List[str] = field(default_factory=list)


def pvds() -> List[Pvd]:
    """Every PvD the daemon manages."""
    handle = _pvds()
    if not handle:
        _fail()
    try:
        out = []
        for i in range(_count(handle)):
            p = _get(handle, i)
            out.append(Pvd(
                name=_text(_name(p)),
                interface=_text(_interface(p)),
                kind=_text(_kind(p)) or "",
                available_v4=bool(_available(p, socket.AF_INET)),
                available_v6=bool(_available(p, socket.AF_INET6)),
                validation_v4=_text(_validation(p, socket.AF_INET)),
                validation_v6=_text(_validation(p, socket.AF_INET6)),
                addresses=_strings(_addresses(p)),
                resolvers=_strings(_resolvers(p)),
                domains=_strings(_domains(p)),
            ))
        return out
    finally:
        _free(handle)


def set_socket_pvd(sock, pvd: str) -> None:
    """Makes `sock` (a socket or an fd) leave by `pvd`, before it connects."""
    if _set_pvd(_fd(sock), pvd.encode()) != 0:
        _fail()


def socket_pvd(sock) -> Optional[str]:
    """The PvD `sock` uses (chosen or given by policy); None if unsteered."""
    buf = ctypes.create_string_buffer(16)
    n = _get_pvd(_fd(sock), buf, len(buf))
    if n < 0:
        _fail()
    return buf.value.decode() if n > 0 else None


def set_process_pvd(pvd: str) -> None:
    """Makes every socket this process opens from now on use `pvd`."""
    if _set_process(pvd.encode()) != 0:
        _fail()


def resolve(pvd: str, host: str) -> List[str]:
    """The addresses of `host` through the resolvers of `pvd`, IPv6 first."""
    handle = _resolve(pvd.encode(), host.encode())
    if not handle:
        _fail()
    try:
        return _strings(handle)
    finally:
        _strings_free(handle)


@dataclass
class Connection:
    """What connect() won: the socket, its PvD and the peer's address."""
    socket: socket.socket
    pvd: str
    address: str
    port: int
    attempts: int


def connect(host: str, port: int, pvd: Optional[str] = None,
            attempt_delay: float = 0.25, timeout: float = 30.0,
            resolution_delay: float = 0.05) -> Connection:
    """Happy Eyeballs across the PvDs this process may use (or `pvd` only)."""
    options = _ConnectOptions(
        size=ctypes.sizeof(_ConnectOptions),
        attempt_delay_ms=max(1, int(attempt_delay * 1000)),
        timeout_ms=max(1, int(timeout * 1000)),
        resolution_delay_ms=max(1, int(resolution_delay * 1000)),
        pvd=pvd.encode() if pvd else None,
    )
    won = _Connection()
    fd = _connect(host.encode(), port, ctypes.byref(options), ctypes.byref(won))
    if fd < 0:
        _fail()
    return Connection(socket.socket(fileno=fd), won.pvd.decode(), won.address.decode(),
                      won.port, won.attempts)


class Watch:
    """The daemon's changes: poll fileno(), then next()."""

    def __init__(self):
        self._handle = _watch_open()
        if not self._handle:
            _fail()

    def fileno(self) -> int:
        return _watch_fd(self._handle)

    def next(self):
        """("pvd", name), ("policies", None), or None when the daemon left."""
        buf = ctypes.create_string_buffer(64)
        kind = _watch_next(self._handle, buf, len(buf))
        if kind < 0:
            _fail()
        if kind == EVENT_PVD:
            return ("pvd", buf.value.decode())
        if kind == EVENT_POLICIES:
            return ("policies", None)
        return None

    def close(self):
        if self._handle:
            _watch_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
