"""Running unmodified programs against the emulated kernel (seccomp user notification)."""
