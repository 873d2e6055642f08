"""The `goniec dkim ...` and `goniec dns ...` commands (click groups).

Owns argument parsing and printing for `dkim keygen DOMAIN SELECTOR` and
`dns check DOMAIN`; the work is in `goniec.mailauth.keys` and
`goniec.mailauth.dnscheck`. Register both on the main group with
`cli.add_command(dkim_group)` and `cli.add_command(dns_group)`.
Exit codes: 0 ok, 1 failed (key file exists, DNS records missing or wrong),
2 bad configuration or usage.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from goniec.errors import ConfigError

EXIT_FAILED = 1
EXIT_CONFIG = 2


@click.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys."""


@dkim_group.command("keygen")
@click.argument("domain")
@click.argument("selector")
@click.option("--type", "kind", type=click.Choice(["rsa", "ed25519"]), default="rsa",
              show_default=True, help="Key type (RFC 8301 RSA, RFC 8463 Ed25519).")
@click.option("--bits", type=click.IntRange(1024, 8192), default=2048, show_default=True,
              help="RSA key size.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Where to write DOMAIN.SELECTOR.key.")
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keygen(domain: str, selector: str, kind: str, bits: int, directory: Path,
           force: bool) -> None:
    """Make a DKIM key pair and print the DNS TXT record to publish."""
    from goniec.mailauth.keys import keygen as make
    from goniec.mailauth.keys import zone_line

    try:
        path, record = make(directory, domain, selector, kind,  # type: ignore[arg-type]
                            bits, overwrite=force)
    except FileExistsError:
        click.echo(f"goniec: {directory / f'{domain.lower()}.{selector}.key'} exists"
                   " (use --force to replace it)", err=True)
        sys.exit(EXIT_FAILED)
    except OSError as exc:
        click.echo(f"goniec: cannot write the key: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"private key: {path} (mode 0600)")
    click.echo(f"publish this TXT record at {selector}._domainkey.{domain.lower()}:")
    click.echo(f"  {record}")
    click.echo("zone file line:")
    click.echo(f"  {zone_line(domain.lower(), selector, record)}")


@click.group("dns")
def dns_group() -> None:
    """DNS records for mail domains."""


def _expected(keys: tuple[str, ...]) -> dict[str, str | None]:
    from goniec.mailauth.keys import KeyError_, load_private_key, public_record

    out: dict[str, str | None] = {}
    for item in keys:
        selector, sep, file = item.partition("=")
        if not sep or not selector or not file:
            raise click.BadParameter(f"{item!r} is not SELECTOR=FILE", param_hint="--key")
        try:
            out[selector] = public_record(load_private_key(Path(file)))
        except (OSError, KeyError_) as exc:
            raise click.BadParameter(f"{file}: {exc}", param_hint="--key") from None
    return out


@dns_group.command("check")
@click.argument("domain")
@click.option("-s", "--selector", "selectors", multiple=True, metavar="SELECTOR",
              help="DKIM selector to look up (repeatable).")
@click.option("--key", "keys", multiple=True, metavar="SELECTOR=FILE",
              help="Our private key for a selector: check the published key matches.")
@click.option("--mail-host", metavar="NAME",
              help="Our MX host name (default: the configured server hostname).")
@click.option("--ip", "ips", multiple=True, metavar="ADDRESS",
              help="An address we send from: check SPF lets it (repeatable).")
@click.option("-n", "--nameserver", "nameservers", multiple=True, metavar="IP",
              help="Name server to ask (default: the [dns] config section).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Name server port.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=None,
              help="Seconds per lookup.")
@click.option("-c", "--config", "config_path", metavar="FILE", default=None,
              help="Config file (default: $GONIEC_CONFIG, else ./goniec.toml, else defaults).")
def check(domain: str, selectors: tuple[str, ...], keys: tuple[str, ...],
          mail_host: str | None, ips: tuple[str, ...], nameservers: tuple[str, ...],
          port: int | None, timeout: float | None, config_path: str | None) -> None:
    """Show the MX, SPF, DKIM and DMARC records DOMAIN needs and whether they are published."""
    from goniec.config import find_config_file, load_config
    from goniec.mailauth.dnscheck import check_domain, format_report
    from goniec.mailauth.dnsview import DnsSettings, DnsView

    try:
        config = load_config(find_config_file(config_path))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG)
    settings = DnsSettings.from_config(config.dns)
    settings = DnsSettings(nameservers or settings.nameservers, port or settings.port,
                           timeout or settings.timeout)
    wanted: dict[str, str | None] = dict.fromkeys(selectors)
    wanted.update(_expected(keys))
    host = mail_host or config.server.hostname
    checks = asyncio.run(check_domain(DnsView(settings), domain, mail_host=host,
                                      selectors=wanted, ips=ips))
    click.echo(format_report(domain.lower().rstrip("."), checks))
    if any(c.status != "ok" for c in checks):
        sys.exit(EXIT_FAILED)
