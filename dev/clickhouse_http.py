#!/usr/bin/env python3
"""A ClickHouse HTTP-interface server over the in-process ClickHouse engine (chdb).

Local development and tests only. It speaks the subset of ClickHouse's HTTP
interface that Trailhouse's Rust code (the `clickhouse` crate and plain HTTP)
sends, with the same semantics as a real server. Exactly this:

* `GET` and `POST` on any path (`/ping` and `/` without a query answer `Ok.`);
  `HEAD` like `GET`;
* the query in the `query` URL parameter and/or the request body, or as a
  `multipart/form-data` field named `query` (what clients send together with
  server-side parameters);
* `INSERT ... FORMAT X` with the rows in the body, after the query's text when
  the query is in the body: streamed to a temporary file as it arrives, and
  inserted with `FROM INFILE` once whole, so the engine's errors reach the
  client and a body cut short is never inserted;
* bodies with `Content-Length` or chunked, plain or `Content-Encoding: gzip` /
  `deflate`;
* `default_format` (or `X-ClickHouse-Format`), `database` (or
  `X-ClickHouse-Database`), server-side parameters `param_<name>`;
* every other URL parameter is a setting that applies to that request only;
* errors as HTTP 500 (400 for a malformed request, 401 for a bad password) with
  the `Code: N. DB::Exception: ...` text and the `X-ClickHouse-Exception-Code`
  header; `X-ClickHouse-Summary` on success;
* user/password checked when configured (Basic auth, `X-ClickHouse-User` /
  `X-ClickHouse-Key` headers, or `user` / `password` URL parameters);
* read-only requests: a request with the setting `readonly` = 1 or 2, and every
  request of the read-only user (`--readonly-user NAME:PASSWORD`), runs in a
  session that the engine holds at `readonly = 2`: it refuses INSERT, DDL and
  changing `readonly`, and allows per-request settings (a real server at
  `readonly = 1` also refuses settings inside the query text). The embedded
  engine has no users or grants, so table-level `GRANT SELECT` cannot be
  enforced here; a real server enforces the chart's grants.

Not implemented: sessions (`session_id`; a `SET` statement lasts in the
engine session that ran it), native-protocol compression (`compress=1` /
`decompress=1` are refused), progress headers, `query_id` cancellation, and
`ENGINE = Kafka` tables: the embedded engine cannot run them, and one whose
creation it refused still blocks its next start, so such a `CREATE` is refused
here before it reaches the engine (error 344, SUPPORT_IS_DISABLED).

Concurrency: the engine allows one process per data directory and runs
statements of different connections at once (an insert does not hold up a
read), one at a time per connection. Each request takes a free session of a
pool (`--sessions` read-write and as many read-only), so at most that many
statements of a kind run at once and the rest wait.
"""

import argparse
import base64
import hmac
import json
import logging
import os
import queue
import re
import socket
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb

# URL parameters that are part of the protocol, not settings.
NOT_SETTINGS = {
    "query", "database", "default_format", "user", "password", "query_id",
    "session_id", "session_timeout", "session_check", "quota_key", "role",
    "wait_end_of_query", "buffer_size", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
}

INSERT_FORMAT = re.compile(
    rb"^\s*INSERT\s+INTO\b(?P<head>.*?)\bFORMAT\s+(?P<fmt>[A-Za-z0-9_]+)[ \t]*(\r?\n)?",
    re.IGNORECASE | re.DOTALL,
)
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CODE = re.compile(r"Code:\s*(\d+)")
KAFKA_TABLE = re.compile(r"^\s*(CREATE|ATTACH)\b[^;]*\bENGINE\s*=\s*Kafka\b", re.I | re.S)
CHUNK = 1 << 20


class ClickHouseError(Exception):
    def __init__(self, code, message, status=500):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def as_clickhouse_error(exc):
    text = str(exc).strip()
    m = CODE.search(text)
    if m:
        return ClickHouseError(int(m.group(1)), text[m.start():])
    return ClickHouseError(1001, f"Code: 1001. DB::Exception: {text}. (STD_EXCEPTION)")


def quote(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def parse_multipart(body, content_type):
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ClickHouseError(
            1001, "Code: 1001. DB::Exception: multipart body without boundary. (BAD_ARGUMENTS)", 400)
    boundary = b"--" + m.group(1).encode()
    fields = {}
    for part in body.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, _, value = part.partition(b"\r\n\r\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        nm = re.search(rb'name="([^"]*)"', head)
        if nm:
            fields[nm.group(1).decode()] = value.decode("utf-8")
    return fields


class Session:
    """One engine connection and what this server has set in it."""

    def __init__(self, path, readonly):
        self.conn = chdb.connect(path)
        if readonly:
            # The engine refuses writes and DDL in this session, and it
            # cannot be switched back.
            self.conn.query("SET readonly = 2")
        self.settings = {}
        self.database = "default"

    def prepare(self, database, settings):
        """Makes the session hold exactly this request's database and
        settings, with one statement for the settings that differ from what
        it holds (nothing when the previous request sent the same)."""
        database = database or "default"
        if database != self.database:
            self.conn.query(f"USE {ident(database)}")
            self.database = database
        changes = [f"{n} = {quote(v)}" for n, v in settings.items() if self.settings.get(n) != v]
        changes += [f"{n} = DEFAULT" for n in self.settings if n not in settings]
        if not changes:
            return
        for name in settings:
            if not SETTING_NAME.match(name):
                raise ClickHouseError(
                    115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
        try:
            self.conn.query("SET " + ", ".join(changes))
            self.settings = dict(settings)
        except Exception:
            # Back to a known state: every setting this server set, default.
            for name in set(self.settings) | set(settings):
                try:
                    self.conn.query(f"SET {name} = DEFAULT")
                except Exception:  # noqa: BLE001 - unknown names are the error itself
                    pass
            self.settings = {}
            raise


class Engine:
    """A pool of engine sessions. The engine runs statements of different
    connections at once (an insert does not hold up reads), one statement
    at a time per connection; each request takes a free session of its
    kind: read-write, or read-only for read-only requests."""

    def __init__(self, path, sessions):
        self.pools = {}
        for readonly in (False, True):
            pool = queue.SimpleQueue()
            for _ in range(sessions):
                pool.put(Session(path, readonly))
            self.pools[readonly] = pool
        self.tmpdir = tempfile.mkdtemp(prefix="ch-insert-")

    def execute(self, sql, data, fmt, database, params, settings, readonly=False):
        """Runs one request (in a read-only session when `readonly`);
        returns (body bytes, summary dict)."""
        if sql and KAFKA_TABLE.search(sql):
            raise ClickHouseError(
                344, "Code: 344. DB::Exception: the local engine does not run Kafka tables "
                "(ENGINE = Kafka); use a ClickHouse server. (SUPPORT_IS_DISABLED)")
        path = None
        if data is not None:
            # The body goes to a file as it arrives, and is inserted with
            # FROM INFILE once complete, not with chdb's streaming insert:
            # that one reports success for blocks the engine refuses when
            # writing them (e.g. too many partitions), losing the rows, and
            # a body cut short must never be inserted as if whole.
            head, in_fmt, chunks = data
            fd, path = tempfile.mkstemp(suffix=".bin", dir=self.tmpdir)
            try:
                with os.fdopen(fd, "wb", buffering=0) as f:
                    for chunk in chunks:
                        f.write(chunk)
            except BaseException:
                os.unlink(path)
                raise
        pool = self.pools[readonly]
        session = pool.get()
        try:
            session.prepare(database, settings)
            if path is not None:
                res = session.conn.query(f"{head} FROM INFILE '{path}' FORMAT {in_fmt}")
                written = getattr(res, "rows_written", None) if res is not None else None
                return b"", {"written_rows": str(written() if callable(written) else 0)}
            res = session.conn.query(sql, fmt, params=params)
            body = res.bytes() if res is not None else b""
            return body, {"read_rows": str(res.rows_read()) if res is not None else "0",
                          "read_bytes": str(res.bytes_read()) if res is not None else "0"}
        except ClickHouseError:
            raise
        except Exception as exc:  # engine errors carry ClickHouse's own text
            raise as_clickhouse_error(exc) from None
        finally:
            pool.put(session)
            if path is not None:
                os.unlink(path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # "/2": serves read-only sessions (a test harness checks for it).
    server_version = "trailhouse-dev-clickhouse/2"

    # Headers and body leave in one write, and without Nagle's delay: a
    # response split in two waited for the client's delayed ACK (~40 ms).
    wbufsize = 1 << 16

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        logging.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status, body, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err, status=500):
        logging.warning("query failed: %s", err.message)
        if getattr(self, "_unread", False):
            self.close_connection = True
        self._send(status, (err.message + "\n").encode(), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(err.code),
        })

    def _authorized(self, url_params):
        """`"rw"` for the configured user, `"ro"` for the read-only user, else None."""
        cfg = self.server.auth
        user = self.headers.get("X-ClickHouse-User")
        key = self.headers.get("X-ClickHouse-Key")
        authz = self.headers.get("Authorization", "")
        if authz.lower().startswith("basic "):
            try:
                user, _, key = base64.b64decode(authz[6:]).decode().partition(":")
            except ValueError:
                return False
        user = user or url_params.get("user") or "default"
        key = key if key is not None else url_params.get("password", "")
        for role, (u, k) in (("rw", cfg), ("ro", self.server.readonly_auth)):
            if u is not None and hmac.compare_digest(user.encode(), u.encode()) and \
                    hmac.compare_digest(key.encode(), k.encode()):
                return role
        return None

    def _raw_chunks(self):
        """The request body as it arrives: Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.strip().split(b";")[0], 16)
                except ValueError:
                    raise ClickHouseError(
                        1001, "Code: 1001. DB::Exception: malformed chunked body. (BAD_ARGUMENTS)", 400) from None
                if size == 0:
                    self.rfile.readline(1024)
                    return
                while size:
                    part = self.rfile.read(min(size, CHUNK))
                    if not part:
                        raise ClickHouseError(
                            1001, "Code: 1001. DB::Exception: the body ended early. (BAD_ARGUMENTS)", 400)
                    size -= len(part)
                    yield part
                self.rfile.readline(1024)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                part = self.rfile.read(min(left, CHUNK))
                if not part:
                    raise ClickHouseError(
                        1001, "Code: 1001. DB::Exception: the body ended early. (BAD_ARGUMENTS)", 400)
                left -= len(part)
                yield part

    def _body_chunks(self):
        """The request body, decompressed, in chunks of about `CHUNK` bytes."""
        enc = self.headers.get("Content-Encoding", "").lower()
        if not enc:
            yield from self._raw_chunks()
            return
        if enc not in ("gzip", "deflate"):
            raise ClickHouseError(
                1001, f"Code: 1001. DB::Exception: unsupported Content-Encoding {enc} on this dev server. (BAD_ARGUMENTS)", 400)
        z = zlib.decompressobj(31 if enc == "gzip" else 15)
        try:
            for part in self._raw_chunks():
                out = z.decompress(part)
                if out:
                    yield out
            out = z.flush()
        except zlib.error as exc:
            raise ClickHouseError(
                1001, f"Code: 1001. DB::Exception: cannot decompress the body: {exc}. (BAD_ARGUMENTS)",
                400) from None
        if out:
            yield out

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in ("/ping", "/") and "query" not in urlsplit(self.path).query:
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        self._handle(readonly=True)

    def do_POST(self):
        self._handle(readonly=False)

    def _handle(self, readonly):
        started = time.monotonic()
        url_params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        # Until the body is read through, an error closes the connection
        # (the next request's bytes would be behind it).
        self._unread = not readonly
        try:
            out, summary, fmt, insert = self._run(url_params, readonly)
        except ClickHouseError as err:
            self._error(err, err.status)
            return
        summary["elapsed_ns"] = str(int((time.monotonic() - started) * 1e9))
        self._send(200, out, {
            "Content-Type": "text/plain" if insert else "text/plain; charset=UTF-8",
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Summary": json.dumps(summary),
        })

    def _read_all(self, chunks):
        body = b"".join(chunks)
        self._unread = False
        return body

    def _run(self, url_params, readonly):
        role = self._authorized(url_params)
        if role is None:
            raise ClickHouseError(
                516, "Code: 516. DB::Exception: default: Authentication failed: password is incorrect, "
                "or there is no user with such name. (AUTHENTICATION_FAILED)", 401)
        chunks = iter(()) if readonly else self._body_chunks()
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            url_params.update(parse_multipart(self._read_all(chunks), ctype))
            chunks = iter(())
        for flag in ("compress", "decompress"):
            if url_params.get(flag) == "1":
                raise ClickHouseError(
                    1001, f"Code: 1001. DB::Exception: {flag}=1 (ClickHouse native block compression) "
                    "is not supported by this dev server; configure the client without compression. (BAD_ARGUMENTS)", 400)
        query = url_params.get("query", "").encode()
        database = url_params.get("database") or self.headers.get("X-ClickHouse-Database")
        fmt = url_params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        params = {k[6:]: v for k, v in url_params.items() if k.startswith("param_")}
        settings = {k: v for k, v in url_params.items()
                    if k not in NOT_SETTINGS and not k.startswith("param_")}
        ro = settings.pop("readonly", "0") in ("1", "2") or role == "ro"

        # An INSERT with its data in the body (after the query's text when
        # the query is in the body too): the data is streamed, not held.
        data = None
        m = INSERT_FORMAT.match(query) if query else None
        if m:
            data = (query[:m.end()], query[m.end():], chunks)
        elif not query:
            prefix = b""
            for chunk in chunks:
                prefix += chunk
                if len(prefix) >= 1 << 16:
                    break
            m = INSERT_FORMAT.match(prefix)
            if m:
                data = (prefix[:m.end()], prefix[m.end():], chunks)
            else:
                query, chunks = prefix, iter([self._read_all(chunks)])
        if data is not None:
            text, first, rest = data
            m = INSERT_FORMAT.match(text)
            head = (b"INSERT INTO" + m.group("head")).decode("utf-8")

            def stream():
                if first:
                    yield first
                yield from rest
                self._unread = False
            out, summary = self.server.engine.execute(
                None, (head, m.group("fmt").decode(), stream()), fmt, database, params, settings,
                readonly=ro)
            return out, summary, fmt, True
        body = self._read_all(chunks)
        sql = (query + (b"\n" if query and body else b"") + body).decode("utf-8", "replace")
        if not sql.strip():
            raise ClickHouseError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)", 400)
        out, summary = self.server.engine.execute(
            sql, None, fmt, database, params, settings, readonly=ro)
        return out, summary, fmt, False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--path", required=True, help="data directory of the engine")
    ap.add_argument("--user", default="default")
    ap.add_argument("--password", default="")
    ap.add_argument("--readonly-user", metavar="NAME:PASSWORD",
                    help="a user whose every request runs read-only")
    ap.add_argument("--sessions", type=int, default=4,
                    help="engine sessions of each kind (read-write, read-only)")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args()
    logging.basicConfig(
        filename=args.log, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    try:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
    except OSError as exc:
        print(f"clickhouse-http: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        sys.exit(2)
    server.daemon_threads = True
    server.engine = Engine(args.path, args.sessions)
    server.auth = (args.user, args.password)
    ro_user, _, ro_key = (args.readonly_user or "").partition(":")
    server.readonly_auth = (ro_user, ro_key) if ro_user else (None, None)
    logging.info("listening on %s:%d, data in %s, engine %s", args.host, args.port, args.path,
                 chdb.engine_version if hasattr(chdb, "engine_version") else chdb.__version__)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
