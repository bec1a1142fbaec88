"""The Python service: one page saying which version of `packaging` parsed the request's path."""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from packaging.version import InvalidVersion, Version


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        text = self.path.lstrip("/") or "0"
        try:
            answer = {"service": "python", "version": str(Version(text))}
        except InvalidVersion:
            answer = {"service": "python", "version": None}
        body = (json.dumps(answer) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
