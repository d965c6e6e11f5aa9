"""An SMTP server on loopback for crates/alerting/tests/email.rs.

aiosmtpd with STARTTLS (required) or implicit TLS, and AUTH (PLAIN, LOGIN)
checked against --user and --password. Prints {"port": N} once listening,
then one JSON line per message received: the envelope, the login it was
sent with, every header, and the decoded text of each MIME part by content
type. Stops when its standard input closes (the test's end).
"""

import argparse
import asyncio
import email
import email.policy
import json
import socket
import ssl
import sys
import logging

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


# aiosmtpd 1.4 logs a warning about its own use of a deprecated attribute.
logging.getLogger("mail.log").setLevel(logging.ERROR)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--mode", choices=["starttls", "implicit"], default="starttls")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--refuse-auth", type=int, default=0, help="refuse this many AUTH attempts first")
    args = p.parse_args()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    refusals = {"left": args.refuse_auth}

    def out(record):
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    def authenticator(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if refusals["left"] > 0:
            refusals["left"] -= 1
            out({"auth_refused": auth_data.login.decode()})
            return AuthResult(success=False, handled=False)
        ok = auth_data.login.decode() == args.user and auth_data.password.decode() == args.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            parts = {}
            for part in message.walk():
                if not part.is_multipart():
                    parts[part.get_content_type()] = part.get_content()
            out({
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
                "content_type": message.get_content_type(),
                "headers": {k: str(v) for k, v in message.items()},
                "parts": parts,
            })
            return "250 OK"

    implicit = args.mode == "implicit"

    def factory():
        return SMTP(
            Handler(),
            hostname="smtp.test",
            tls_context=None if implicit else context,
            require_starttls=not implicit,
            authenticator=authenticator,
            auth_required=True,
            # SMTPS is TLS from the first byte, which aiosmtpd does not see.
            auth_require_tls=not implicit,
        )

    async def serve():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, sock=sock, ssl=context if implicit else None)
        out({"port": sock.getsockname()[1]})
        # Until the test closes our standard input.
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
