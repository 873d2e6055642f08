"""Goniec: a mail transfer agent (SMTP server).

Layers (see DESIGN.md): errors/model (L0); protocol, policy (L1, no I/O);
queue, server, config, cli (shells and storage); app.py wires them together.
"""

__version__ = "0.1.0"
