"""A client of the MIF API, as an application would use it: the tests run
it as an unprivileged user inside the lab, with the Python module over
libmif (mif-capi/python/mif.py). Every command prints one JSON object.

  mif_client.py choose --to ADDR --port P --proto tcp|udp|udp-unconnected [--pvd NAME]
      choose the PvD (if given) of a new socket, then reach the lab's peer
      with it, which answers with the network it came by and the source it
      saw; a failed choice is reported and the socket still used, so the
      test sees it was left as it was.
  mif_client.py handoff --to ADDR --port P --pvd NAME
      choose, then fork and exec this script ("use-fd") with the socket:
      the child connects it.
  mif_client.py use-fd --fd N --to ADDR --port P
  mif_client.py connect --host H --port P [--pvd NAME] [--delay MS]
      Happy Eyeballs across PvDs (mif.connect), then read the peer's line.
  mif_client.py watch --pvd NAME
      subscribe, print {"subscribed": true}, and wait for an event about
      the PvD NAME.
  mif_client.py process --pvd NAME --to ADDR --port P
      set_process_pvd, then reach the peer with a new socket.
  mif_client.py resolve --pvd NAME --host H
  mif_client.py pvds
"""
import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time

import mif


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def talk(sock, proto, to, port):
    """The peer's reply line over `sock`, or the error that stopped it."""
    sock.settimeout(3)
    try:
        if proto == "tcp":
            sock.connect((to, port))
            return {"reply": sock.makefile().readline().strip()}
        if proto == "udp":
            sock.connect((to, port))
            sock.send(b"?")
            return {"reply": sock.recv(512).decode().strip()}
        sock.sendto(b"?", (to, port))
        data, _ = sock.recvfrom(512)
        return {"reply": data.decode().strip()}
    except OSError as e:
        return {"talk_error": e.errno, "talk_message": str(e)}


def new_socket(proto, to):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    return socket.socket(family_of(to), kind)


def choose(args):
    sock = new_socket(args.proto, args.to)
    if args.bind:
        sock.bind((args.bind, 0))
    out = {"before": mif.socket_pvd(sock)}
    if args.pvd is not None:
        try:
            mif.set_socket_pvd(sock, args.pvd)
        except mif.MifError as e:
            out["choose_error"] = e.errno
            out["choose_message"] = e.strerror
    out["after"] = mif.socket_pvd(sock)
    out.update(talk(sock, args.proto, args.to, args.port))
    return out


def handoff(args):
    sock = new_socket("tcp", args.to)
    mif.set_socket_pvd(sock, args.pvd)
    fd = sock.fileno()
    os.set_inheritable(fd, True)
    child = subprocess.run(
        [sys.executable, __file__, "use-fd", "--fd", str(fd), "--to", args.to,
         "--port", str(args.port)],
        pass_fds=[fd], capture_output=True, text=True, check=False)
    sock.close()
    if child.returncode != 0:
        return {"child_error": child.stderr.strip()}
    return json.loads(child.stdout)


def use_fd(args):
    sock = socket.socket(fileno=args.fd)
    out = {"pid": os.getpid(), "pvd": mif.socket_pvd(sock)}
    out.update(talk(sock, "tcp", args.to, args.port))
    return out


def connect(args):
    start = time.monotonic()
    cpu = time.process_time()
    try:
        won = mif.connect(args.host, args.port, pvd=args.pvd,
                          attempt_delay=args.delay / 1000.0, timeout=10)
    except mif.MifError as e:
        return {"connect_error": e.errno, "message": e.strerror}
    connected_ms = (time.monotonic() - start) * 1000
    cpu_ms = (time.process_time() - cpu) * 1000
    won.socket.settimeout(3)
    line = won.socket.makefile().readline().strip()
    return {
        "pvd": won.pvd, "address": won.address, "attempts": won.attempts,
        "socket_pvd": mif.socket_pvd(won.socket), "reply": line,
        "connected_ms": connected_ms, "cpu_ms": cpu_ms,
        "first_byte_ms": (time.monotonic() - start) * 1000,
    }


def watch(args):
    """Waits, as a poll loop would, for an event about each of --pvd."""
    waiting = set(args.pvd)
    seen = {}
    with mif.Watch() as w:
        print(json.dumps({"subscribed": True}), flush=True)
        deadline = time.monotonic() + 20
        while waiting and time.monotonic() < deadline:
            # Only what select() says is readable is read: events must
            # not wait unseen behind a readable-looking fd.
            ready, _, _ = select.select([w], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                break
            event = w.next()
            if event is None:
                return {"error": "the daemon went away"}
            if event[0] == "pvd" and event[1] in waiting:
                waiting.discard(event[1])
                state = next(p for p in mif.pvds() if p.name == event[1])
                seen[event[1]] = {"available_v4": state.available_v4}
    if waiting:
        return {"error": "no event", "missing": sorted(waiting), "seen": seen}
    return {"events": seen}


def process(args):
    """set_process_pvd, then a new socket without a choice of its own; with
    --hold, once more after a line on stdin (the test changes policies in
    between)."""
    out = {}
    try:
        mif.set_process_pvd(args.pvd)
    except mif.MifError as e:
        out["process_error"] = e.errno
        out["process_message"] = e.strerror
    out.update(new_connection(args))
    if args.hold:
        print(json.dumps(out), flush=True)
        sys.stdin.readline()
        return new_connection(args)
    return out


def new_connection(args):
    sock = new_socket("tcp", args.to)
    out = {"pvd": mif.socket_pvd(sock)}
    out.update(talk(sock, "tcp", args.to, args.port))
    out["cgroup"] = open("/proc/self/cgroup").read().strip()
    return out


def resolve(args):
    try:
        return {"addresses": mif.resolve(args.pvd, args.host)}
    except mif.MifError as e:
        return {"resolve_error": e.errno, "message": e.strerror}


def pvds(_args):
    return [p.__dict__ for p in mif.pvds()]


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("choose")
    c.add_argument("--to", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--proto", default="tcp")
    c.add_argument("--pvd")
    c.add_argument("--bind")
    h = sub.add_parser("handoff")
    h.add_argument("--to", required=True)
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--pvd", required=True)
    u = sub.add_parser("use-fd")
    u.add_argument("--fd", type=int, required=True)
    u.add_argument("--to", required=True)
    u.add_argument("--port", type=int, required=True)
    k = sub.add_parser("connect")
    k.add_argument("--host", required=True)
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--pvd")
    k.add_argument("--delay", type=float, default=250)
    w = sub.add_parser("watch")
    w.add_argument("--pvd", action="append", required=True)
    p = sub.add_parser("process")
    p.add_argument("--pvd", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hold", action="store_true")
    r = sub.add_parser("resolve")
    r.add_argument("--pvd", required=True)
    r.add_argument("--host", required=True)
    sub.add_parser("pvds")
    args = parser.parse_args()
    commands = {"choose": choose, "handoff": handoff, "use-fd": use_fd,
                "connect": connect, "watch": watch, "resolve": resolve, "process": process, "pvds": pvds}
    print(json.dumps(commands[args.command](args)), flush=True)


if __name__ == "__main__":
    main()
