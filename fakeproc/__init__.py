"""fakeproc: an emulated two-tier (DRAM/PMEM) Linux memory kernel, mounted over FUSE."""

__version__ = "0.1.0"
