"""`pillion ca init|issue|inspect`: a small certificate authority for workload identities (SPIFFE).

Theory of operation: wiring only. `init` creates a root CA directory, `issue` signs an X509-SVID for one
SPIFFE ID into a directory a sidecar's `identity` config points at, `inspect` describes any certificate
file. The work is in pillion.tls.ca and pillion.tls.certinfo. Every problem a user can fix (a missing CA,
a bad PEM file, a malformed SPIFFE ID or TTL, a directory that cannot be written) ends the command with
exit 1 and one line naming the file or value, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

DEFAULT_CA_TTL = "87600h"  # 10 years
DEFAULT_SVID_TTL = "24h"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="create a root CA (ECDSA P-256) in a new directory")
    init.add_argument("--dir", required=True, metavar="CA_DIR", help="where to write ca.pem and ca-key.pem")
    init.add_argument("--common-name", default=None, metavar="NAME", help="the CA's subject common name")
    init.add_argument("--ttl", default=DEFAULT_CA_TTL, metavar="DURATION", help="lifetime (default 10 years)")

    issue = actions.add_parser("issue", help="issue an X509-SVID: cert.pem, key.pem and bundle.pem")
    issue.add_argument("--ca", required=True, metavar="CA_DIR", help="a directory made by `pillion ca init`")
    issue.add_argument(
        "--spiffe-id", required=True, metavar="ID", help="e.g. spiffe://example.org/ns/default/sa/web"
    )
    issue.add_argument("--out", required=True, metavar="DIR", help="where to write the three files")
    issue.add_argument("--ttl", default=DEFAULT_SVID_TTL, metavar="DURATION", help="lifetime (default 24h)")
    issue.add_argument(
        "--dns", action="append", default=[], metavar="NAME", help="also add a DNS SAN (repeatable)"
    )

    inspect = actions.add_parser("inspect", help="describe the certificates in a PEM or DER file")
    inspect.add_argument("file", metavar="FILE")


def main(args: argparse.Namespace) -> int:
    from pillion.tls.ca import CaError

    prog = f"pillion ca {args.action}"
    try:
        if args.action == "init":
            _init(args)
        elif args.action == "issue":
            _issue(args)
        else:
            from pillion.tls.certinfo import inspect

            print(inspect(args.file))
    except (CaError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # anything the library did not word itself
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{prog}:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _init(args: argparse.Namespace) -> None:
    from pillion.tls.ca import CA_KEY, DEFAULT_CA_NAME, init_ca

    path = init_ca(args.dir, common_name=args.common_name or DEFAULT_CA_NAME, ttl=_ttl(args.ttl))
    print(f"wrote {path} and {path.with_name(CA_KEY)} (mode 0600); {path} is the trust bundle")


def _issue(args: argparse.Namespace) -> None:
    from pillion.tls.ca import issue_svid

    issued = issue_svid(args.ca, args.spiffe_id, args.out, ttl=_ttl(args.ttl), dns_names=args.dns)
    print(
        f"issued {issued.spiffe_id}, valid until {issued.not_after:%Y-%m-%d %H:%M:%S} UTC:\n"
        f"  {issued.cert}\n  {issued.key} (mode 0600)\n  {issued.bundle}"
    )


def _ttl(text: str) -> dt.timedelta:
    from pillion.config.units import parse_duration

    try:
        seconds = float(parse_duration(text))
    except ValueError as exc:
        raise ValueError(f"--ttl: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"--ttl: must be more than zero, got {text!r}")
    return dt.timedelta(seconds=seconds)
