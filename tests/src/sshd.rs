//! Private `sshd` instances on loopback ports, used as deploy hosts.
