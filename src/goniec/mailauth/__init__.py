"""Sender authentication: SPF, DKIM, DMARC and ARC, inbound and outbound.

The API, by module (import from the module; this package imports nothing so
that `goniec dkim keygen` stays quick):

- `dnsview`:  `DnsSettings`, `DnsView` - the configured resolver (async + blocking).
- `keys`:     `DkimKey`, `keygen`, `load_dkim_key`, `public_record` - DKIM keys.
- `dkim`:     `sign(message, key) -> header`, `verify(view, message) -> [DkimResult]`.
- `spf`:      `check_mail_from`, `check_helo` (async), `check_host` (blocking).
- `dmarc`:    `check`, `discover`, `evaluate`, `organizational_domain`.
- `arc`:      `verify(view, message) -> ArcResult`, `seal` / `seal_in_thread`.
- `results`:  `authentication_results`, `remove_ours` (RFC 8601).
- `outcome`:  the result values; `decision`: `InboundPolicy`, `inbound_decision`.
- `inbound`:  `InboundChecker` - everything above for one received message.
- `dnscheck`: `check_domain`, `format_report` - behind `goniec dns check`.

Layering: `outcome` and `decision` are pure (no I/O); `results` and the
parsing parts are pure functions; DNS happens only through `dnsview`.
"""
