#!/usr/bin/env python3
"""A ClickHouse HTTP-interface server over the in-process ClickHouse engine (chdb).

Local development and tests only. It speaks the subset of ClickHouse's HTTP
interface that Trailhouse's Rust code (the `clickhouse` crate and plain HTTP)
sends, with the same semantics as a real server:

* the query in the `query` URL parameter and/or the request body, or as a
  `multipart/form-data` field named `query` (what clients send together with
  server-side parameters);
* `INSERT ... FORMAT X` with the rows in the body (written to a temporary
  file and inserted with `FROM INFILE`, so the engine's errors reach the client);
* `default_format`, `database`, server-side parameters `param_<name>`;
* every other URL parameter is a setting that applies to that request only;
* errors as HTTP 500 with the `Code: N. DB::Exception: ...` text and the
  `X-ClickHouse-Exception-Code` header;
* user/password checked when configured (Basic auth, `X-ClickHouse-User` /
  `X-ClickHouse-Key` headers, or `user` / `password` URL parameters).

The embedded engine cannot run `ENGINE = Kafka` tables, and one whose
creation it refused still blocks its next start; such a `CREATE` is refused
here before it reaches the engine (error 344, SUPPORT_IS_DISABLED).

The engine allows one process per data directory and one statement at a time
per connection, so requests are serialized.
"""

import argparse
import base64
import gzip
import hmac
import json
import logging
import os
import re
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
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


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
            1001, "Code: 1001. DB::Exception: multipart body without boundary. (BAD_ARGUMENTS)")
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


class Engine:
    """Serialized access to one chdb connection."""

    def __init__(self, path):
        self.conn = chdb.connect(path)
        self.lock = threading.Lock()
        self.tmpdir = tempfile.mkdtemp(prefix="ch-insert-")

    def _setting_state(self, name):
        out = self.conn.query(
            "SELECT value, changed FROM system.settings WHERE name = {n:String}",
            "JSONCompact", params={"n": name})
        rows = json.loads(out.bytes())["data"]
        if not rows:
            raise ClickHouseError(
                115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
        return rows[0][0], bool(int(rows[0][1]))

    def execute(self, sql, data, fmt, database, params, settings):
        """Runs one request; returns (body bytes, summary dict)."""
        if sql and KAFKA_TABLE.search(sql):
            raise ClickHouseError(
                344, "Code: 344. DB::Exception: the local engine does not run Kafka tables "
                "(ENGINE = Kafka); use a ClickHouse server. (SUPPORT_IS_DISABLED)")
        with self.lock:
            restore = []
            try:
                if database:
                    self.conn.query(f"USE {ident(database)}")
                for name, value in settings.items():
                    if not SETTING_NAME.match(name):
                        raise ClickHouseError(
                            115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
                    restore.append((name, self._setting_state(name)))
                    self.conn.query(f"SET {name} = {quote(value)}")
                if data is not None:
                    # Not chdb's streaming insert: it reports success for
                    # blocks the engine refuses when writing them (e.g. too
                    # many partitions), losing the rows. FROM INFILE raises
                    # the engine's error as a server would.
                    head, in_fmt, chunks = data
                    fd, path = tempfile.mkstemp(suffix=".bin", dir=self.tmpdir)
                    try:
                        with os.fdopen(fd, "wb") as f:
                            for chunk in chunks:
                                f.write(chunk)
                        res = self.conn.query(f"{head} FROM INFILE '{path}' FORMAT {in_fmt}")
                    finally:
                        os.unlink(path)
                    written = getattr(res, "rows_written", None) if res is not None else None
                    return b"", {"written_rows": str(written() if callable(written) else 0)}
                res = self.conn.query(sql, fmt, params=params)
                body = res.bytes() if res is not None else b""
                return body, {"read_rows": str(res.rows_read()) if res is not None else "0",
                              "read_bytes": str(res.bytes_read()) if res is not None else "0"}
            except ClickHouseError:
                raise
            except Exception as exc:  # engine errors carry ClickHouse's own text
                raise as_clickhouse_error(exc) from None
            finally:
                for name, (old, changed) in reversed(restore):
                    try:
                        if changed:
                            self.conn.query(f"SET {name} = {quote(old)}")
                        else:
                            self.conn.query(f"SET {name} = DEFAULT")
                    except Exception:  # noqa: BLE001 - best effort, logged
                        logging.exception("failed to restore setting %s", name)
                if database:
                    try:
                        self.conn.query("USE default")
                    except Exception:  # noqa: BLE001
                        logging.exception("failed to reset database")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "trailhouse-dev-clickhouse"

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
        self._send(status, (err.message + "\n").encode(), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(err.code),
        })

    def _authorized(self, url_params):
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
        return hmac.compare_digest(user.encode(), cfg[0].encode()) and \
            hmac.compare_digest(key.encode(), cfg[1].encode())

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(length)) if length else b""
        enc = self.headers.get("Content-Encoding", "").lower()
        if enc == "gzip":
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
        elif enc:
            raise ClickHouseError(
                1001, f"Code: 1001. DB::Exception: unsupported Content-Encoding {enc} on this dev server. (BAD_ARGUMENTS)")
        return body

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
        try:
            body = self._read_body() if not readonly else b""
        except ClickHouseError as err:
            self._error(err, 400)
            return
        if not self._authorized(url_params):
            self._error(ClickHouseError(
                516, "Code: 516. DB::Exception: default: Authentication failed: password is incorrect, "
                "or there is no user with such name. (AUTHENTICATION_FAILED)"), 401)
            return
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            try:
                url_params.update(parse_multipart(body, ctype))
            except ClickHouseError as err:
                self._error(err, 400)
                return
            body = b""
        for flag in ("compress", "decompress"):
            if url_params.get(flag) == "1":
                self._error(ClickHouseError(
                    1001, f"Code: 1001. DB::Exception: {flag}=1 (ClickHouse native block compression) "
                    "is not supported by this dev server; configure the client without compression. (BAD_ARGUMENTS)"), 400)
                return
        query = url_params.get("query", "").encode()
        database = url_params.get("database") or self.headers.get("X-ClickHouse-Database")
        fmt = url_params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        params = {k[6:]: v for k, v in url_params.items() if k.startswith("param_")}
        settings = {k: v for k, v in url_params.items()
                    if k not in NOT_SETTINGS and not k.startswith("param_")}

        data = None
        m = INSERT_FORMAT.match(query) if query else None
        if m and body:
            data = (b"INSERT INTO" + m.group("head"), m.group("fmt").decode(), body)
        elif not query:
            m = INSERT_FORMAT.match(body[:1 << 16])
            if m:
                data = (b"INSERT INTO" + m.group("head"), m.group("fmt").decode(), body[m.end():])
        if data is not None:
            head, in_fmt, payload = data
            inline = query[m.end():] if query else b""
            chunks = [inline] + [payload[i:i + CHUNK] for i in range(0, len(payload), CHUNK)]
            data = (head.decode("utf-8"), in_fmt, chunks)
            sql = None
        else:
            sql = (query + (b"\n" if query and body else b"") + body).decode("utf-8", "replace")
            if not sql.strip():
                self._error(ClickHouseError(
                    62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)"), 400)
                return
        try:
            out, summary = self.server.engine.execute(sql, data, fmt, database, params, settings)
        except ClickHouseError as err:
            self._error(err)
            return
        summary["elapsed_ns"] = str(int((time.monotonic() - started) * 1e9))
        self._send(200, out, {
            "Content-Type": "text/plain; charset=UTF-8" if data is None else "text/plain",
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Summary": json.dumps(summary),
        })


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--path", required=True, help="data directory of the engine")
    ap.add_argument("--user", default="default")
    ap.add_argument("--password", default="")
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
    server.engine = Engine(args.path)
    server.auth = (args.user, args.password)
    logging.info("listening on %s:%d, data in %s, engine %s", args.host, args.port, args.path,
                 chdb.engine_version if hasattr(chdb, "engine_version") else chdb.__version__)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
