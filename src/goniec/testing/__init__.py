"""Public test helpers: start a real `goniec serve` process on loopback.

Production code never imports this package. Everything here talks only to
127.0.0.1 / ::1 and every wait is bounded.
"""
