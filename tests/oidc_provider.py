"""A small OpenID Connect provider on 127.0.0.1, standing in for Google, Entra or Okta in the sign-in tests.

It speaks the authorization-code flow the way Streamlit's st.login (Authlib) uses it: discovery, /authorize (which signs
in ``user`` at once, without a form, and redirects back with a code), /token (client secret checked, basic or post; the
code single-use, bound to its redirect URI and PKCE S256 challenge) returning an RS256 ID token that carries the nonce,
and /jwks with the public key. Every request's path is kept in ``seen``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class OIDCProvider:
    """Start with ``with OIDCProvider(client_id, client_secret) as idp:``; set ``idp.user`` to who signs in next."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.user: dict[str, Any] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.seen: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.metadata_url = f"{self.issuer}/.well-known/openid-configuration"

    def __enter__(self) -> OIDCProvider:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def metadata(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"]}

    def jwks(self) -> dict[str, Any]:
        public = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": _uint(public.n), "e": _uint(public.e)}]}

    def id_token(self, claims: dict[str, Any]) -> str:
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = self.key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64(signature)}"

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if query.get("client_id") != self.client_id or query.get("response_type") != "code" or "redirect_uri" not in query:
            return 400, {}, {"error": "invalid_request"}
        if "S256" != query.get("code_challenge_method", "S256"):
            return 400, {}, {"error": "invalid_request", "error_description": "only S256"}
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"redirect_uri": query["redirect_uri"], "nonce": query.get("nonce"), "user": dict(self.user),
                            "challenge": query.get("code_challenge")}
        back = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        return 302, {"Location": back}, None

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, str], Any]:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            client_id, _, client_secret = (unquote(part) for part in base64.b64decode(authorization[6:]).decode().partition(":"))
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return 401, {}, {"error": "invalid_client"}
        grant = self.codes.pop(form.get("code", ""), None)  # single use
        if form.get("grant_type") != "authorization_code" or grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
            return 400, {}, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        if grant["challenge"] and _b64(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "PKCE verifier does not match"}
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300, "sub": grant["user"].get("email", "x"),
                  **({"nonce": grant["nonce"]} if grant["nonce"] else {}), **grant["user"]}
        return 200, {}, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                         "id_token": self.id_token(claims)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for k, v in {**headers, **({"Content-Type": "application/json"} if body is not None else {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                idp.seen.append(url.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._send(200, {}, idp.metadata())
                elif url.path == "/jwks":
                    self._send(200, {}, idp.jwks())
                elif url.path == "/authorize":
                    self._send(*idp.authorize(query))
                else:
                    self._send(404, {}, {"error": "not_found"})

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                idp.seen.append(url.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if url.path == "/token":
                    self._send(*idp.token(form, self.headers.get("Authorization")))
                else:
                    self._send(404, {}, {"error": "not_found"})

        return Handler


COOKIE_SECRET = "cookie-secret-for-tests-only-0123456789abcdef"


def write_secrets(path: Path, redirect_uri: str, metadata_url: str, client_id: str = "evalsvc-dashboard",
                  client_secret: str = "client-secret-for-tests", drop: tuple[str, ...] = (), **values: str) -> Path:
    """A Streamlit secrets file with its [auth] section (``drop``: keys to leave out; ``values``: keys to replace)."""
    auth = {"redirect_uri": redirect_uri, "cookie_secret": COOKIE_SECRET, "client_id": client_id,
            "client_secret": client_secret, "server_metadata_url": metadata_url, **values}
    path.write_text("[auth]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in auth.items() if k not in drop))
    return path


def with_sign_in(config: Path, secrets_file: str, users: list[str], domains: list[str], out: Path | None = None) -> Path:
    """``config`` (a seeded project's evalsvc.yaml) with a dashboard.auth block, written to ``out`` (default: beside it,
    as signin.yaml)."""
    text = config.read_text()
    assert "dashboard: {cache_ttl_s: 0}" in text
    block = f"dashboard: {{cache_ttl_s: 0, auth: {{secrets_file: {secrets_file}, allow_users: {json.dumps(users)}, " \
            f"allow_domains: {json.dumps(domains)}}}}}"
    out = out or config.with_name("signin.yaml")
    out.write_text(text.replace("dashboard: {cache_ttl_s: 0}", block))
    return out
