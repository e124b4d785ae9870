#!/usr/bin/env python3
"""Times raw-protocol logins the way other clients make them (Python's ssl,
docs/PROTOCOL.md section 9): connect, TLS handshake, preamble and auth,
until `hello` and `auth_ok` arrive. Used by bench/login.sh.

Usage: login.py HOST PORT TOKEN_FILE [RUNS]

Each client style is measured RUNS times (default 200), alternating:
with and without TCP_NODELAY (most clients leave Nagle's algorithm on),
and with the preamble and `auth` sent together, in two writes, or as the
spec's example does (preamble, wait for hello, then auth). Prints, per
style, the median and p90 from the end of the TLS handshake to `hello`,
and from connect to `auth_ok`, in milliseconds.
"""
import json, socket, ssl, statistics, struct, sys, time

def frame(msg):
    header = json.dumps({**msg, "body_len": 0}, separators=(",", ":")).encode()
    return struct.pack(">I", len(header)) + header

def recv(sock, buf):
    while True:
        if len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            if len(buf) >= 4 + n:
                return json.loads(buf[4:4 + n]), buf[4 + n:]
        data = sock.recv(65536)
        if not data:
            sys.exit("login.py: the server closed the connection")
        buf += data

def login(host, port, token, nodelay, style):
    start = time.perf_counter()
    sock = socket.create_connection((host, port))
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(sock, server_hostname="wiresh")
    handshaken = time.perf_counter()
    auth = frame({"type": "auth", "token": token})
    if style == "together":
        tls.sendall(b"WIRESH\x00\x01" + auth)
    elif style == "two writes":
        tls.sendall(b"WIRESH\x00\x01")
        tls.sendall(auth)
    else:
        tls.sendall(b"WIRESH\x00\x01")
    hello, buf = recv(tls, b"")
    greeted = time.perf_counter()
    if style == "spec":
        tls.sendall(auth)
    ok, buf = recv(tls, buf)
    done = time.perf_counter()
    if hello.get("type") != "hello" or ok.get("type") != "auth_ok":
        sys.exit(f"login.py: unexpected answer {hello} {ok}")
    tls.close()
    return (greeted - handshaken) * 1000, (done - start) * 1000

def main(host, port, token_file, runs="200"):
    token = open(token_file).read().strip()
    styles = [(nodelay, style) for nodelay in (False, True)
              for style in ("together", "two writes", "spec")]
    times = {s: [] for s in styles}
    for _ in range(int(runs)):
        for nodelay, style in styles:
            times[(nodelay, style)].append(login(host, int(port), token, nodelay, style))
    for (nodelay, style), samples in times.items():
        hello = sorted(s[0] for s in samples)
        whole = sorted(s[1] for s in samples)
        p90 = lambda xs: xs[int(len(xs) * 0.9) - 1]
        print(f"{'TCP_NODELAY' if nodelay else 'Nagle on':11} {style:10}  "
              f"to hello: median {statistics.median(hello):6.2f} p90 {p90(hello):6.2f}   "
              f"connect to auth_ok: median {statistics.median(whole):6.2f} p90 {p90(whole):6.2f} ms")

if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
