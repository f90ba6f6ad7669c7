"""The FUSE file system: renders kernel state and maps syscalls to it."""
