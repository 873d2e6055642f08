"""The SMTP reply catalog: every reply Goniec sends, as named `Reply` constants.

Owns the wording and the codes (RFC 5321 4.2 basic codes, RFC 3463 / RFC 5248
enhanced codes) so that the protocol core, policy, the server shell and the
tests all use the same values. No I/O, no logic beyond `with_hostname`.
Layer 0 (it imports only goniec.errors), so that the protocol core and policy,
which must not import each other, can both use it.

Naming: R<code>_<MEANING>. 421 and 221 replies should start with the server's
name (RFC 5321 4.2); build them with `with_hostname(R421_..., hostname)`.
"""

from __future__ import annotations

from goniec.errors import Reply


def with_hostname(reply: Reply, hostname: str) -> Reply:
    """`reply` with the text prefixed by the server's name ("421 4.7.0 mx.example Too ...")."""
    return reply.with_text(f"{hostname} {reply.text}")


# --- 2xx: success -------------------------------------------------------------
R214_HELP = Reply(
    214,
    "2.0.0",
    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
)
R220_READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")  # RFC 3207 4
R221_BYE = Reply(221, "2.0.0", "Service closing transmission channel")  # with_hostname
R235_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")  # RFC 4954 6
R250_OK = Reply(250, "2.0.0", "Ok")
R250_SENDER_OK = Reply(250, "2.1.0", "Sender ok")
R250_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
R250_QUEUED = Reply(250, "2.0.0", "Ok: queued")
R250_BDAT_RECEIVED = Reply(250, "2.0.0", "octets received")  # text becomes "<n> octets received"
R252_CANNOT_VRFY = Reply(  # RFC 5321 3.5.3, 7.3: VRFY is not answered truthfully
    252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
)

# --- 3xx: intermediate (no enhanced code: RFC 2034 3 covers final replies) ----
R354_START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")

# --- 4xx: temporary -------------------------------------------------------------
R421_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors")  # with_hostname
R421_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down")  # with_hostname
R421_CLOSED_BY_ADMIN = Reply(421, "4.3.2", "Connection closed by the administrator")  # with_hostname
R421_PAUSED = Reply(421, "4.3.2", "Service paused, try again later")  # with_hostname
R421_TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded")  # with_hostname
R421_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections")  # with_hostname
R421_SERVICE_UNAVAILABLE = Reply(421, "4.3.0", "Service not available")  # with_hostname
R450_MAILBOX_UNAVAILABLE = Reply(450, "4.2.1", "Mailbox temporarily unavailable")
R451_LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing")
R452_INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
R452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
R454_TEMP_AUTH_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
# Access control, rates and peer checks (goniec.policy). RFC 7372 2: X.7.25 is
# "reverse DNS validation failed"; RFC 3463 3.5: X.4.3 directory server failure.
R421_CONNECTION_RATE = Reply(  # with_hostname
    421, "4.7.0", "Too many connections from your address, try again later"
)
R421_TOO_MANY_MESSAGES = Reply(  # with_hostname
    421, "4.7.0", "Too many messages in one session, send the rest in a new one"
)
R421_LOGIN_LOCKED = Reply(421, "4.7.0", "Too many failed logins, try again later")  # with_hostname
R421_REVERSE_DNS_TEMP = Reply(  # with_hostname
    421, "4.7.25", "Cannot look up your host name now, try again later"
)
R450_MESSAGE_RATE = Reply(450, "4.7.1", "Too much mail from your address, try again later")
R450_USER_MESSAGE_RATE = Reply(450, "4.7.1", "Too much mail from your account, try again later")
R451_DNS_TEMP = Reply(451, "4.4.3", "Cannot look up your host name now, try again later")
R452_SESSION_SIZE = Reply(  # RFC 3463 3.4: X.3.4 message too big for the system (this session)
    452, "4.3.4", "Session size limit reached, send the rest in a new session"
)
R454_LOGIN_RATE_USER = Reply(454, "4.7.0", "Too many failed logins for this account, try later")
# Sender authentication (goniec.mailauth.decision), RFC 7372 3.2 and RFC 3463.
R451_SPF_TEMP = Reply(451, "4.7.24", "SPF validation error, try again later")  # RFC 7372 3.2
R451_DMARC_TEMP = Reply(451, "4.4.3", "Cannot look up the DMARC policy now, try again later")

# --- 5xx: command syntax (answered by the protocol core) ----------------------
R500_UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized")
R500_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")  # RFC 5321 4.5.3.1.4
R500_BARE_LF = Reply(500, "5.5.2", "Command line must end with CRLF")  # RFC 5321 2.3.8
R501_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
R501_NO_ARGUMENTS = Reply(501, "5.5.4", "This command takes no arguments")
R501_HELO_NAME_REQUIRED = Reply(501, "5.5.4", "HELO/EHLO requires a domain name")
R501_VRFY_ARGUMENT_REQUIRED = Reply(501, "5.5.4", "VRFY requires an argument")
R501_INVALID_UTF8 = Reply(501, "5.5.2", "Invalid UTF-8 in command")
R501_BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
R501_BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
R501_BAD_PARAMETER = Reply(501, "5.5.4", "Invalid parameter value")
R501_AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")  # RFC 4954 4
R501_AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64 response")  # RFC 4954 4
R501_AUTH_BAD_UTF8 = Reply(501, "5.5.2", "Credentials must be valid UTF-8")
R501_AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication response")
R502_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
R503_BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
R503_HELO_FIRST = Reply(503, "5.5.1", "Send HELO/EHLO first")
R503_EHLO_FIRST = Reply(503, "5.5.1", "Send EHLO first")
R503_MAIL_FIRST = Reply(503, "5.5.1", "Need MAIL command")
R503_NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
R503_DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA not allowed after BDAT")  # RFC 3030 2
R503_ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")  # RFC 4954 4
R503_AUTH_IN_TRANSACTION = Reply(  # RFC 4954 4
    503, "5.5.1", "AUTH not permitted during a mail transaction"
)
R503_TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")  # RFC 3207 4
R504_AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")  # RFC 4954 4
R555_UNKNOWN_PARAMETER = Reply(  # RFC 5321 4.1.1.11
    555, "5.5.4", "MAIL FROM/RCPT TO parameter not recognized or not implemented"
)
R555_DUPLICATE_PARAMETER = Reply(555, "5.5.4", "Duplicate MAIL FROM/RCPT TO parameter")
R555_UNSUPPORTED_BODY = Reply(555, "5.5.4", "Unsupported BODY type")  # BINARYMIME not offered

# --- 5xx: authentication and TLS ----------------------------------------------
R530_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 6
R535_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 6
R538_ENCRYPTION_REQUIRED = Reply(  # RFC 4954 6
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
R530_TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 4

# --- 5xx: envelope and message (policy, shell, and the core for body checks) -
R550_RELAY_DENIED = Reply(550, "5.7.1", "Unable to relay")
R550_UNKNOWN_USER = Reply(550, "5.1.1", "User unknown")
R550_MAILBOX_UNAVAILABLE = Reply(550, "5.2.1", "Mailbox unavailable")
R552_MESSAGE_TOO_BIG = Reply(  # RFC 1870 6.1 / RFC 3463
    552, "5.3.4", "Message size exceeds fixed maximum message size"
)
R553_SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by user")
R550_DMARC_REJECT = Reply(550, "5.7.1", "Rejected by the DMARC policy of the sender domain")
R550_SPF_FAIL = Reply(550, "5.7.23", "SPF validation failed")  # RFC 7372 3.2
R553_SMTPUTF8_REQUIRED = Reply(  # RFC 6531 3.5
    553, "5.6.7", "Non-ASCII address not permitted without SMTPUTF8"
)
R554_ACCESS_DENIED = Reply(554, "5.7.1", "Access denied")
R554_NO_REVERSE_DNS = Reply(554, "5.7.25", "Client host rejected: cannot find your host name")
R554_TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops")  # RFC 3463 3.5: X.4.6 routing loop
R501_BAD_HELO = Reply(501, "5.5.2", "Invalid HELO/EHLO name")
R504_HELO_NOT_FQDN = Reply(504, "5.5.2", "HELO/EHLO name must be a fully-qualified domain name")
R550_HELO_MISMATCH = Reply(550, "5.7.1", "HELO/EHLO name does not match your address")
R554_NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")  # RFC 5321 3.3
R554_TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
# Body rejections made by the core after the final dot (SMTP smuggling defence,
# RFC 5321 2.3.8 and 4.1.1.4: only <CRLF>.<CRLF> ends the data).
R554_BARE_LINE_ENDING = Reply(
    554, "5.6.0", "Message contains bare CR or LF; lines must end with CRLF"
)
R554_MESSAGE_LINE_TOO_LONG = Reply(  # RFC 5321 4.5.3.1.6
    554, "5.6.0", "Message contains a line longer than allowed"
)
