/*
 * fakeproc native core: the one header shared by the C sources and cffi's cdef.
 *
 * Everything here is flat data over arrays that one `struct fp_kernel` owns;
 * there is no global state, so several emulated kernels can live in one process.
 * Keep this file parseable by cffi: plain integer #defines, no expressions,
 * no includes (build.py strips the marked block below before cdef).
 */
/* CDEF-SKIP-BEGIN */
#ifndef FAKEPROC_H
#define FAKEPROC_H
#include <stdint.h>
#include <stddef.h>
/* CDEF-SKIP-END */

/* ---- x86_64 page-table entry bits (arch/x86/include/asm/pgtable_types.h) ---- */
#define FP_PAGE_PRESENT   1
#define FP_PAGE_RW        2
#define FP_PAGE_USER      4
#define FP_PAGE_ACCESSED  32
#define FP_PAGE_DIRTY     64
#define FP_PAGE_PSE       128
#define FP_PAGE_PROTNONE  256
#define FP_PAGE_SPECIAL   512  /* pte_special(): a PFN map's entry ([vvar]), no page behind */
/* _PAGE_SOFT_DIRTY (bit 11): set where 4.20 calls pte_mkdirty()/pmd_mkdirty() (a
 * write fault, never the MMU's own dirty bit), cleared by clear_refs; swap and
 * migration entries carry it in the same bit (x86 keeps it in bit 1 there) */
#define FP_PAGE_SOFT_DIRTY 2048
/* a non-present, non-empty entry: swap or migration entry (bit 62 chosen so it
 * never collides with an address field); the low bits carry a type */
#define FP_PAGE_SWPENTRY  4611686018427387904
#define FP_SWP_SWAP       2
#define FP_SWP_MIGRATION  4

/* a swap entry's slot offset is in the address bits (12-51) of the entry; the
 * device's type is 0 (one device). pagemap shows offset << 5 | type. */
#define FP_SWP_TYPE_SHIFT 5

/* smaps keeps Pss in bytes << PSS_SHIFT (fs/proc/task_mmu.c) */
#define FP_PSS_SHIFT 12

/* ---- struct page flags (include/linux/page-flags.h, the few we need) ---- */
#define FP_PG_LRU          1
#define FP_PG_ACTIVE       2
#define FP_PG_REFERENCED   4
#define FP_PG_ANON         8
#define FP_PG_HEAD         16
#define FP_PG_TAIL         32
#define FP_PG_DIRTY        64
#define FP_PG_SWAPBACKED   128
#define FP_PG_UNEVICTABLE  256
#define FP_PG_ALLOCATED    512
#define FP_PG_DEVICE       1024
#define FP_PG_EXECMAP      2048   /* mapped by a VM_EXEC VMA (the rmap's vm_flags) */
#define FP_PG_PINNED       4096   /* an extra reference (GUP pin): migration fails -EAGAIN */
#define FP_PG_IDLE         8192   /* page_idle: marked idle, not accessed since */
#define FP_PG_YOUNG        16384  /* page_idle took an accessed bit away: reclaim counts it */
#define FP_PG_TABLE        32768  /* PageTable: a PTE table (pgtable_page_ctor), in NR_PAGETABLE */

/* ---- per-node counters (NR_* of include/linux/mmzone.h, in pages) ---- */
#define FP_NR_FREE_PAGES      0
#define FP_NR_ANON_PAGES      1
#define FP_NR_ACTIVE_ANON     2
#define FP_NR_INACTIVE_ANON   3
#define FP_NR_ACTIVE_FILE     4
#define FP_NR_INACTIVE_FILE   5
#define FP_NR_FILE_PAGES      6
#define FP_NR_MAPPED          7
#define FP_NR_ANON_THPS       8
#define FP_NR_DIRTY           9
#define FP_NR_PAGETABLE       10
#define FP_NR_UNEVICTABLE     11
#define FP_NUMA_HIT           12
#define FP_NUMA_MISS          13
#define FP_NUMA_FOREIGN       14
#define FP_NUMA_INTERLEAVE    15
#define FP_NUMA_LOCAL         16
#define FP_NUMA_OTHER         17
#define FP_NR_SHMEM           18
#define FP_NR_ISOLATED_ANON   19
#define FP_NR_ISOLATED_FILE   20
#define FP_NR_NODE_STATS      21

/* ---- LRU lists (enum lru_list) ---- */
#define FP_LRU_INACTIVE_ANON  0
#define FP_LRU_ACTIVE_ANON    1
#define FP_LRU_INACTIVE_FILE  2
#define FP_LRU_ACTIVE_FILE    3
#define FP_LRU_UNEVICTABLE    4
#define FP_NR_LRU_LISTS       5
#define FP_LRU_NONE           4294967295

/* ---- watermarks ---- */
#define FP_WMARK_MIN  0
#define FP_WMARK_LOW  1
#define FP_WMARK_HIGH 2

/* ---- reclaim modes ---- */
#define FP_RECLAIM_KSWAPD 0
#define FP_RECLAIM_DIRECT 1

/* ---- global events (enum vm_event_item) ---- */
#define FP_EV_PGFAULT         0
#define FP_EV_PGALLOC_NORMAL  1
#define FP_EV_PGFREE          2
#define FP_EV_THP_FAULT_ALLOC 3
#define FP_EV_THP_FAULT_FALLBACK 4
#define FP_EV_PGACTIVATE      5
#define FP_EV_PGMAJFAULT      6
#define FP_EV_PGDEACTIVATE    7
#define FP_EV_PGREFILL        8
#define FP_EV_PGSTEAL_KSWAPD  9
#define FP_EV_PGSTEAL_DIRECT  10
#define FP_EV_PGSCAN_KSWAPD   11
#define FP_EV_PGSCAN_DIRECT   12
#define FP_EV_PSWPIN          13
#define FP_EV_PSWPOUT         14
#define FP_EV_PGMIGRATE_SUCCESS 15
#define FP_EV_PGMIGRATE_FAIL  16
#define FP_EV_ALLOCSTALL_NORMAL 17
#define FP_EV_PAGEOUTRUN      18
#define FP_EV_OOM_KILL        19
#define FP_EV_THP_SWPOUT_FALLBACK 20
#define FP_EV_KSWAPD_LOW_WMARK_HIT_QUICKLY 21
#define FP_EV_KSWAPD_HIGH_WMARK_HIT_QUICKLY 22
#define FP_EV_PGROTATED       23
#define FP_EV_THP_SPLIT_PMD   24
#define FP_EV_NUMA_PAGES_MIGRATED 25
#define FP_EV_NUMA_HINT_FAULTS 26
#define FP_EV_PGPROMOTE_SUCCESS 27
#define FP_EV_PGPROMOTE_CANDIDATE 28
#define FP_EV_PGDEMOTE_KSWAPD 29
#define FP_EV_PGDEMOTE_DIRECT 30
#define FP_EV_THP_SPLIT_PAGE  31
#define FP_EV_THP_SPLIT_PAGE_FAILED 32
#define FP_EV_THP_ZERO_PAGE_ALLOC 33
#define FP_EV_THP_DEFERRED_SPLIT_PAGE 34
#define FP_NR_EVENTS          40

#define FP_MAX_NODES      64
#define FP_NO_NODE        64   /* fp_touch()'s answer for a frame outside node RAM */
#define FP_MAX_MMS        65536
#define FP_PTRS_PER_TABLE 512
#define FP_PAGES_PER_HUGE 512

/* ---- idle_pages scan flags (the file's status flags, RFC v2) ---- */
#define FP_SCAN_HUGE_PAGE 2048
#define FP_SCAN_SKIM_IDLE 131072
#define FP_SCAN_DIRTY     262144

/* ---- VMA flags the walk and the fault path need ---- */
#define FP_VMA_WALK       1
#define FP_VMA_HUGETLB    2
#define FP_VMA_THP        4
#define FP_VMA_ANON       8
#define FP_VMA_WRITE      16
#define FP_VMA_SHMEM      32   /* shared anonymous / tmpfs: swap-backed page cache */
#define FP_VMA_SPECIAL    64   /* [vdso], [vvar]: kernel frames, not node RAM */
#define FP_VMA_COW        128  /* private writable file mapping: a write makes an anon copy */
#define FP_VMA_EXEC       256
#define FP_VMA_PFNMAP     512  /* [vvar]: VM_PFNMAP, its entries are special */

/* ---- fault flags: WRITE, THP, and the VMA's FP_VMA_* flags shifted left by 8 ---- */
#define FP_FAULT_WRITE    1
#define FP_FAULT_THP      2
#define FP_FAULT_NOZERO   4   /* a read fault takes a page, not the zero page (KVM's) */
#define FP_FAULT_VMA_SHIFT 8

struct fp_page {           /* 16 bytes */
    uint16_t flags;        /* FP_PG_* */
    uint16_t mapcount;     /* number of PTEs (or PMDs) mapping it */
    uint32_t pte;          /* reverse map: the arena index of the first mapper's entry
                            * (its mm and address follow from the table's owner/base) */
    uint32_t lru_prev;     /* LRU neighbours (PFNs), FP_LRU_NONE at the ends */
    uint32_t lru_next;
};

struct fp_node {
    uint64_t start_pfn;
    uint64_t nr_pages;
    /* free 2 MiB blocks: a stack of block numbers relative to start_pfn/512 */
    uint32_t *free_blocks;
    uint64_t nr_free_blocks;
    /* free 4 KiB pages of split blocks: a list of offsets from start_pfn linked
     * through the pages' lru_next, FP_LRU_NONE at the end */
    uint32_t free_head;
    uint64_t nr_free_pages;
    uint64_t *split_blocks; /* a bit per 2 MiB block ever split into 4 KiB pages (they
                             * never merge back): its free pages are order-0 buddies */
    uint64_t stat[21];
    int16_t fallback[64];  /* build_zonelists(): this node, then same-type nodes */
    int32_t nr_fallback;
    /* LRU lists: head = most recently added, reclaim takes from the tail.
     * invariant: lru_len[l] counts base pages (a THP head counts 512) */
    uint32_t lru_head[5];
    uint32_t lru_tail[5];
    uint64_t wmark[3];     /* min, low, high in pages */
    int32_t peer;          /* peer_node's index, -1 if none (demotion target) */
    int32_t is_dram;
    int32_t kswapd_wake;   /* set by the allocator, cleared by kswapd */
    /* zone_reclaim_stat: base pages recently scanned and rotated back to the active
     * list, [0] anon (swap-backed) [1] page cache, get_scan_count()'s SCAN_FRACT */
    uint64_t recent_scanned[2];
    uint64_t recent_rotated[2];
};

struct fp_mm {
    uint64_t pgd;          /* table index of the PGD in the arena (0 = none) */
    uint32_t id;
    uint32_t alive;
    int16_t zonelist[64];  /* node preference order for faults */
    int32_t nr_zonelist;
    int32_t local_node;    /* node of the CPU the task runs on (numa_local) */
    int16_t interleave[64];/* MPOL_INTERLEAVE nodes (nr_interleave > 0 overrides zonelist) */
    int32_t nr_interleave;
    uint64_t rss_anon;     /* pages */
    uint64_t rss_file;
    uint64_t rss_shmem;
    uint64_t nr_tables;    /* page-table pages below the PGD, PGD included */
    uint64_t nr_swap;      /* swap entries */
    uint64_t hiwater_rss;
    int32_t vm;            /* index of the VM this process runs + 1, 0 = none */
    /* clear_refs 4 took VM_SOFTDIRTY from every VMA: vma_wants_writenotify() now
     * write-protects shared writable mappings, shmem too (its stores fault) */
    uint32_t track_soft_dirty;
    /* ground truth for scoring: pages moved DRAM->PMEM / PMEM->DRAM by reclaim and by
     * syscalls, and pages idle_pages reads silently skipped (lost rest of a PMD, pages
     * between the last record and the end of a full read) */
    uint64_t demoted_reclaim;
    uint64_t demoted_syscall;
    uint64_t promoted_syscall;
    uint64_t promoted_kernel;  /* by NUMA balancing (upstream mode 2) */
    uint64_t idle_missed;
};

/* ---- KVM: memory slots and the EPT (arch/x86/kvm) ---- */
#define FP_EPT_R        1
#define FP_EPT_W        2
#define FP_EPT_X        4
#define FP_EPT_LARGE    128
#define FP_EPT_ACCESSED 256
#define FP_EPT_DIRTY    512
#define FP_MAX_VMS      256
#define FP_MAX_SLOTS    32

struct fp_memslot {
    uint64_t gpa;          /* guest-physical start, page aligned */
    uint64_t npages;
    uint64_t hva;          /* the QEMU process's address of gpa */
    uint32_t vma_flags;    /* FP_VMA_* of the host VMA backing it (THP, anon) */
};

struct fp_vm {
    uint32_t mm;           /* the QEMU process's address space */
    uint64_t eptp;         /* EPT root table index, 0 = none */
    int32_t has_vcpu0;
    int32_t ad_enabled;    /* EPT accessed/dirty bits */
    int32_t levels;        /* EPT page-walk levels (4) */
    int32_t root_valid;    /* VALID_PAGE(vcpu->arch.mmu->root_hpa) */
    uint32_t nr_slots;     /* sorted by hva, not overlapping */
    struct fp_memslot slots[32];
};

/* a further mapper of a page mapped more than once (after fork); the first mapper
 * lives in struct fp_page itself. The further mappers of one PFN form a chain, whose
 * head is found by PFN in blocks of FP_RMAP_BLOCK heads (rmap.c): rmap_heads. */
struct fp_rmap_ext {
    uint64_t pfn;
    uint64_t vpn;
    uint32_t mm;
    uint32_t next;         /* index + 1 of the next entry for the same PFN (or free one),
                            * 0 at the end */
};
#define FP_RMAP_FREE 0xFFFFFFFFFFFFFFFFULL /* the pfn of a side-table entry on the free list */
struct fp_rmap_heads;
#define FP_RMAP_BLOCK 512 /* chain heads per block: the PFNs of one 2 MiB block */

struct fp_truth;

/* the smallest workload (pages) worth the prefetching loop: one page more than the
 * workload TLB covers (FP_TLB_ENTRIES x 512 pages), beyond which the plain loop misses
 * it at nearly every touch (at 128-256 Ki pages the plain loop was still 1.2-1.4x
 * faster; at 512 Ki pages 9x slower) */
#define FP_WL_PIPELINE_PAGES 262145

struct fp_kernel {
    uint64_t *tables;      /* arena of 512-entry tables, index 0 reserved */
    uint64_t tables_cap;
    uint64_t tables_used;  /* bump pointer */
    uint64_t *table_pfn;   /* the node page backing each table (PageTables) */
    uint64_t *table_base;  /* per table: the first address it maps | its level (1-4) */
    uint32_t *table_mm;    /* per table: the mm it belongs to */
    uint64_t **table_deposit; /* per PMD table, made at its first huge entry: for each
                            * entry the PFN + 1 of the page table deposited with it
                            * (pgtable_trans_huge_deposit), 0 = none */
    uint64_t nr_deposit_arrays;
    uint64_t *free_tables; /* stack of freed table indices */
    uint64_t nr_free_tables;
    uint64_t free_tables_cap;
    struct fp_page *pages; /* indexed by PFN */
    struct fp_truth *truth;/* ground truth per PFN (internal.h): one record, one cache miss */
    uint64_t nr_pfns;
    uint64_t device_pfn;   /* next PFN handed out for device (DAX) memory */
    /* the shared zero page and huge zero page: kernel frames outside node RAM, in the
     * gap before the device memory (as [vdso]'s frames are outside it) */
    uint64_t zero_pfn;
    uint64_t huge_zero_pfn;
    int32_t huge_zero_used; /* get_huge_zero_page() has allocated it (thp_zero_page_alloc) */
    int32_t nr_nodes;
    struct fp_node nodes[64];
    struct fp_mm *mms[65536];
    uint64_t events[40];
    int32_t in_reclaim;    /* PF_MEMALLOC: reclaim's own allocations skip watermarks */
    int32_t demotion_disabled; /* /sys/kernel/mm/numa/demotion_enabled = false (upstream mode) */
    int32_t numa_balancing;    /* /proc/sys/kernel/numa_balancing: bit 1 = memory tiering */
    struct fp_vm *vms[256];
    struct fp_rmap_ext *rmap_ext;
    uint64_t nr_rmap_ext;  /* entries handed out so far, free ones included */
    uint64_t cap_rmap_ext;
    uint64_t rmap_ext_free; /* index + 1 of the first free entry, 0 = none */
    struct fp_rmap_heads **rmap_heads; /* by PFN / FP_RMAP_BLOCK, NULL while it has no chain */
    uint64_t rmap_blocks;       /* the directory's length (0 until the first chain) */
    uint64_t rmap_blocks_used;  /* blocks allocated */
    uint64_t rmap_chains;       /* PFNs with a chain */
    struct fp_rmap_heads *rmap_spare; /* an empty block kept for an add that must not fail */
    uint64_t tlb_gen;      /* moves on every table free or upper-level rewrite: TLBs flush */
    int32_t tlb_off;       /* never fill workload TLBs: every touch walks (the reference
                            * path of the differential test; set it before any workload
                            * runs: entries filled earlier stay valid and keep hitting) */
    uint64_t wl_pipeline_pages; /* workloads of this many pages or more run the pipelined
                            * loop (workload.c); fp_kernel_new sets FP_WL_PIPELINE_PAGES */
    uint64_t swap_total;   /* pages of the emulated swap device (0 = none) */
    uint64_t swap_used;    /* slots in use (a count above 0) */
    uint32_t *swap_map;    /* a reference count per slot (swap_map of mm/swapfile.c):
                            * the swap PTEs naming it; slot 0 is the header's */
    uint64_t swap_slots;   /* slots in swap_map, the header's included (it grows with
                            * the highest slot used; slots past it are free) */
    uint64_t swap_next;    /* where the next slot search starts (cluster_next) */
    uint64_t swap_dev_used; /* slots in use on the device (swap_used counts those past it too) */
    uint64_t swap_past_next; /* where a search past the device's end starts */
};

/* kernel lifetime: node sizes in pages, each a multiple of 512 */
struct fp_kernel *fp_kernel_new(int32_t nr_nodes, const uint64_t *node_pages,
                                uint64_t max_tables);
void fp_kernel_free(struct fp_kernel *k);

/* address spaces */
int32_t fp_mm_new(struct fp_kernel *k, uint32_t id);
void fp_mm_destroy(struct fp_kernel *k, uint32_t id);
/* munmap() and madvise(MADV_DONTNEED): zap_page_range() over [start, end) (pages,
 * swap entries; a huge PMD covered in part is split first; tables stay), and
 * free_pgd_range() of a removed range between floor and ceiling (0: the top) */
int32_t fp_zap_range(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end);
/* a VMA is split at addr: a huge PMD across it is split (split_huge_pmd_address()) */
int32_t fp_split_huge_pmd_at(struct fp_kernel *k, uint32_t id, uint64_t addr);
int32_t fp_free_pgd_range(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t end,
                          uint64_t floor, uint64_t ceiling);
/* 1 when [start, end) maps an anonymous page, the huge zero page (a THP fault's
 * anon_vma_prepare() came first) or a swap or migration entry: a VMA that had
 * anonymous faults has an anon_vma (vma_merge() looks at it) */
int32_t fp_range_has_anon(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end);
/* fork(), one VMA [start, end) at a time (copy_page_range()): the child's page tables
 * map the parent's pages, copy-on-write in a private mapping, old in the child;
 * flags FP_FORK_SHARED: a shared mapping (the child's copies are clean too). */
#define FP_FORK_SHARED    1
int32_t fp_mm_fork_vma(struct fp_kernel *k, uint32_t parent, uint32_t child, uint64_t start,
                       uint64_t end, uint32_t flags);

/* page tables: look up the entry mapping addr; level_out = 4 (PTE), 3 (PMD),
 * 2 (PUD), or the level where the walk found an empty slot */
uint64_t *fp_lookup(struct fp_kernel *k, uint32_t id, uint64_t addr, int32_t *level_out);

/* scenario set-up: install exact entries.  `node` chooses the page's node.
 * pte_bits: FP_PAGE_* bits for a present page, or a swap entry value. */
int32_t fp_set_pte(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t bits,
                   int32_t node, uint32_t vma_flags);
int32_t fp_set_ptes(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t nr,
                    uint64_t bits, int32_t node, uint32_t vma_flags);
/* a machine file's page pattern: `repeat` copies of nr_runs runs of identical PTEs
 * (bits 0 = leave the pages unmapped), from addr on */
struct fp_pte_run {
    uint64_t nr;
    uint64_t bits;
    int32_t node;
    uint32_t pad;
};
int32_t fp_set_pte_runs(struct fp_kernel *k, uint32_t id, uint64_t addr,
                        const struct fp_pte_run *runs, uint32_t nr_runs, uint64_t repeat,
                        uint32_t vma_flags);
int32_t fp_set_thp(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t bits,
                   int32_t node);
int32_t fp_set_pud(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t bits);
int32_t fp_set_table_bits(struct fp_kernel *k, uint32_t id, uint64_t addr, int32_t level,
                          uint64_t set, uint64_t clear);

/* page faults and hardware accesses; fp_touch returns the node index that served
 * the access (FP_NO_NODE outside node RAM) or -errno */
int32_t fp_fault(struct fp_kernel *k, uint32_t id, uint64_t addr, uint32_t fault_flags);
int32_t fp_touch(struct fp_kernel *k, uint32_t id, uint64_t addr, uint32_t fault_flags);

/* /proc/PID/idle_pages: one read(2) of count bytes at pos into ubuf, in steps of at
 * most max_passes passes (one staging buffer each), so a server can answer other
 * requests in between: start (0 or -errno; a read with nothing to walk is done at
 * once), step until it returns 0, then copied (bytes stored in ubuf) and cursor (the
 * new file position). vmas are sorted by start. A step walks the tables from the top
 * again with the VMAs given to it; a read whose address space died (or switched to or
 * from a VM) since the last step, or a step with max_passes 0, ends the read with what
 * it has; max_passes 0xffffffff walks the whole read. */
struct fp_vma_span {
    uint64_t start;
    uint64_t end;
    uint32_t flags;        /* FP_VMA_* */
};
struct fp_idle_scan;
struct fp_idle_scan *fp_idle_scan_new(void);
void fp_idle_scan_free(struct fp_idle_scan *s);
int64_t fp_idle_scan_start(struct fp_kernel *k, struct fp_idle_scan *s, uint32_t id, uint64_t pos,
                           uint64_t count, uint32_t scan_flags, uint8_t *ubuf);
int32_t fp_idle_scan_step(struct fp_kernel *k, struct fp_idle_scan *s, const struct fp_vma_span *vmas,
                          uint32_t nr_vmas, uint32_t max_passes);
uint64_t fp_idle_scan_copied(const struct fp_idle_scan *s);
uint64_t fp_idle_scan_cursor(const struct fp_idle_scan *s);
/* a read that filled its buffer: the present pages after its last unit it left
 * unreported (not yet in idle_missed), where they begin, and the read's end */
uint64_t fp_idle_scan_tail(const struct fp_idle_scan *s, uint64_t *resume, uint64_t *end);
void fp_idle_missed_add(struct fp_kernel *k, uint32_t mm_id, uint64_t pages);
uint64_t fp_idle_present(struct fp_kernel *k, uint32_t mm_id, const struct fp_vma_span *vmas,
                         uint32_t nr_vmas, uint64_t lo, uint64_t hi);

/* KVM (kvm.c): a VM of a process, guest accesses through the EPT, EPT-mode idle_pages */
int32_t fp_vm_new(struct fp_kernel *k, uint32_t mm);
void fp_vm_destroy(struct fp_kernel *k, int32_t vm);
int32_t fp_ept_touch(struct fp_kernel *k, int32_t vm, uint64_t gpa, int32_t write);
int32_t fp_ept_set(struct fp_kernel *k, int32_t vm, uint64_t gpa, int32_t level, uint64_t bits,
                   int32_t node);
int64_t fp_ept_entry(struct fp_kernel *k, int32_t vm, uint64_t gpa, int32_t *level_out);

/* the workload engine */
#define FP_WL_UNIFORM 0
#define FP_WL_HOTCOLD 1
#define FP_WL_ZIPF    2
#define FP_WL_SEQ     3

struct fp_region {
    uint64_t start;
    uint64_t nr_pages;
    uint32_t vma_flags;
};

/* One entry of a workload's software TLB: the PMD entry mapping a 2 MiB region
 * (an index into the table arena) and, for a PTE table, that table. Valid while
 * the kernel's tlb_gen is unchanged (it moves whenever a table is freed or an
 * upper-level entry's bits are rewritten, as a TLB flush would). */
#define FP_TLB_ENTRIES 512
struct fp_tlb_entry {
    uint64_t tag;          /* (addr >> 21) + 1; 0 = empty */
    uint64_t gen;
    uint64_t pmd;          /* arena index of the PMD entry */
    uint64_t pte_table;    /* the PTE table it pointed to (0 for a huge PMD) */
};

struct fp_workload {
    uint32_t pattern;
    uint32_t mm;
    uint64_t rng;          /* xorshift64* state, never 0 */
    struct fp_region *regions;
    uint32_t nr_regions;
    uint64_t total_pages;
    uint64_t hot_offset;   /* first page of the hot set (pages into the region space) */
    uint64_t hot_pages;
    double hot_prob;       /* probability a touch goes to the hot set */
    double write_frac;
    double zipf_s;
    uint64_t seq_pos;
    int32_t vm;            /* >= 0: a guest workload, regions are guest-physical */
    uint64_t on_node[65];  /* touches served per node index ([64]: outside node RAM) */
    uint64_t touches;      /* done so far */
    uint64_t faults_failed;
    struct fp_tlb_entry tlb[512];
};
int64_t fp_workload_run(struct fp_kernel *k, struct fp_workload *wl, uint64_t n);

/* reclaim (vmscan.c) and migration (migrate.c) */
int64_t fp_shrink_node(struct fp_kernel *k, int32_t nid, uint64_t nr_to_reclaim, int32_t mode);
int64_t fp_kswapd(struct fp_kernel *k, int32_t nid);
void fp_age_active(struct fp_kernel *k, int32_t nid);
#define FP_MR_RECLAIM  0   /* demotion by reclaim */
#define FP_MR_SYSCALL  1   /* move_pages / migrate_pages: a daemon's own traffic */
#define FP_MR_PROMOTE  2   /* NUMA balancing's memory-tiering promotion (upstream mode) */
int32_t fp_migrate_page(struct fp_kernel *k, uint64_t pfn, int32_t dst, int32_t caller_node,
                        int32_t reason, uint64_t *new_pfn);
/* move_pages(2) of 4.20 with the RFC's MPOL_MF_SW_YOUNG (migrate.c). vmas: the
 * target's VMAs sorted by start, with what follow_page() needs to know of each.
 * nodes NULL: query mode. node_index[id] for ids below FP_MAX_NUMNODES: the node's
 * index, -1 no such node (ENODEV), -2 outside the task's mems_allowed (EACCES);
 * node_ids[index]: the id. status is the caller's array, written where 4.20 writes
 * it; scratch holds n PFNs. Returns 0, the count not migrated, or -errno. */
#define FP_MPOL_MF_MOVE_ALL  4
#define FP_MPOL_MF_SW_YOUNG  128
#define FP_MAX_NUMNODES      1024
#define FP_MV_ANON 0   /* no ->fault: a missing page is EFAULT; the others ENOENT */
#define FP_MV_FILE 1   /* a file mapping: a missing page is ENOENT */
#define FP_MV_VVAR 2   /* VM_IO | VM_PFNMAP: not migratable, a frame is EFAULT */
#define FP_MV_VDSO 3   /* kernel frames on vdso_node: busy to move elsewhere */
struct fp_move_vma {
    uint64_t start;
    uint64_t end;
    uint32_t kind;
    uint32_t soft_dirty;   /* VM_SOFTDIRTY (pagemap): set on a new VMA, cleared by clear_refs */
};
/* migrate_pages(2)'s migrate_to_node(): of pfns (an mm's present pages in address
 * order; the array is reused) those on node index src (mapped once unless move_all)
 * are isolated and migrated to node index dst; 0, the pages left, -ENOMEM or -EBUSY */
int64_t fp_migrate_to_node(struct fp_kernel *k, uint64_t *pfns, uint64_t n, int32_t src,
                           int32_t dst, int32_t caller, int32_t move_all);
int64_t fp_move_pages(struct fp_kernel *k, uint32_t id, const struct fp_move_vma *vmas,
                      uint32_t nr_vmas, uint64_t n, const uint64_t *pages, const int32_t *nodes,
                      const int16_t *node_index, const int32_t *node_ids, int32_t vdso_node,
                      uint32_t flags, int32_t caller, int32_t *status, uint64_t *scratch);
/* Which entries fp_move_pages() wrote (its put_user()s), for a caller whose array
 * lives elsewhere: it ran on a status array filled with FP_STATUS_UNWRITTEN (no
 * status value); the entries still holding that get old[i] back, the written ones
 * are stored as [start, end) pairs in runs (room for n + 1 values). Returns the
 * number of pairs. */
#define FP_STATUS_UNWRITTEN -2147483648
uint64_t fp_status_written(int32_t *status, const int32_t *old, uint64_t n, uint64_t *runs);
uint32_t fp_lru_list_of(struct fp_kernel *k, uint64_t pfn);

/* per-range page statistics for numa_maps, smaps and migrate_pages (pagewalk.c) */
struct fp_range_stats {
    uint64_t pages;        /* present base pages */
    uint64_t anon;         /* of them anonymous */
    uint64_t dirty;        /* PTE/PMD dirty or PG_dirty */
    uint64_t active;       /* on an active list */
    uint64_t referenced;   /* accessed bit set */
    uint64_t swap;         /* swap entries (base pages) */
    uint64_t thp;          /* base pages in anonymous THPs */
    uint64_t mapmax;       /* largest mapcount */
    uint64_t shared;       /* base pages mapped more than once */
    uint64_t shared_dirty; /* of them dirty */
    uint64_t pss;          /* proportional set size in bytes << 12 (PSS_SHIFT): each
                            * page adds (4096 << 12) / its map count, as smaps_account() */
    uint64_t swap_pss;     /* the same for swap entries, by the slot's count */
    uint64_t kernel_pages; /* [vdso] pages: kernel-image frames smaps counts (each
                            * process maps its own: private), numa_maps does not */
    uint64_t kernel_referenced;
    uint64_t kernel_dirty;
    uint64_t node[64];     /* present base pages per node index */
};
int32_t fp_range_stats(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end,
                       struct fp_range_stats *out);
/* /proc/PID/clear_refs over [start, end) of one VMA (fs/proc/task_mmu.c
 * clear_refs_write(); the caller picks the VMAs by type): soft_dirty 0 clears the
 * accessed bits and PG_referenced/PG_young (types 1-3), 1 write-protects and clears
 * the soft-dirty bits (type 4). 0 or -ESRCH. */
int32_t fp_clear_refs(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end,
                      int32_t soft_dirty);
/* migrate_pages(2)'s queue_pages_pmd(): split the huge zero PMD mapping addr, if
 * that is what maps it (1), else 0; -ENOMEM */
int32_t fp_split_huge_zero_at(struct fp_kernel *k, uint32_t id, uint64_t addr);
/* present leaf pages in [start, end): addresses and PFNs, THPs once; the first max
 * are stored; returns how many there are (above max: call again with more room), or
 * -errno */
int64_t fp_range_pages(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end,
                       uint64_t *addrs, uint64_t *pfns, uint64_t max);

/* the invariant checker: number of problems, the first described in msg */
int64_t fp_check(struct fp_kernel *k, char *msg, uint64_t msglen);

/* ground truth: access counts of n PFNs into out (reset them when asked) */
void fp_access_counts(struct fp_kernel *k, const uint64_t *pfns, uint64_t n, uint32_t *out,
                      int32_t reset);

/* ground truth of the n PFNs from start, both counts (struct fp_truth stays internal) */
void fp_truth_read(const struct fp_kernel *k, uint64_t start, uint64_t n, uint32_t *access,
                   uint16_t *window);

/* The recorder's window: for every mm, the accesses of this window (sum of
 * the window counts of its pages) and those an oracle placement would have served
 * from DRAM (the hottest pages, as many as dram_pages); then the window restarts.
 * out_total/out_oracle are indexed by mm id, n_mm entries. */
int32_t fp_oracle(struct fp_kernel *k, uint64_t dram_pages, uint64_t *out_total,
                  uint64_t *out_oracle, uint32_t n_mm);

/* Heat of [start, end) of one mm in nbuckets equal buckets: this window's accesses
 * (window counts), present pages, and present pages on DRAM nodes, per bucket.
 * Call before fp_oracle(), which ends the window. */
int32_t fp_heat(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end, uint32_t nbuckets,
                uint64_t *accesses, uint64_t *pages, uint64_t *dram_pages);

/* Later upstream interfaces (pageidle.c): /proc/PID/pagemap entries for n virtual
 * pages from addr; /proc/kpageflags and /proc/kpagecount for n PFNs; the page_idle
 * bitmap (64 PFNs a word) */
int32_t fp_pagemap(struct fp_kernel *k, uint32_t id, const struct fp_move_vma *vmas,
                   uint32_t nr_vmas, uint64_t addr, uint64_t n, int32_t show_pfn, uint64_t *out);
void fp_kpageflags(struct fp_kernel *k, uint64_t pfn, uint64_t n, uint64_t *out);
void fp_kpagecount(struct fp_kernel *k, uint64_t pfn, uint64_t n, uint64_t *out);
void fp_page_idle_read(struct fp_kernel *k, uint64_t pfn, uint64_t nwords, uint64_t *out);
void fp_page_idle_write(struct fp_kernel *k, uint64_t pfn, uint64_t nwords, const uint64_t *in);

/* host memory the emulated machine holds, in bytes, by what it is for (page_alloc.c);
 * populated: base pages mapped by emulated processes (anon + page cache) */
struct fp_mem_usage {
    uint64_t pages;        /* struct fp_page per PFN: flags, mapcount, rmap, LRU links */
    uint64_t page_tables;  /* page-table pages handed out (4 KiB each) and their index */
    uint64_t truth;        /* ground truth for scoring: access and window counts per PFN */
    uint64_t free_lists;   /* the allocator's stacks of free 2 MiB blocks */
    uint64_t rmap_ext;     /* further mappers of pages shared after fork */
    uint64_t other;        /* the kernel, mm and VM structures, the swap slot counts */
    uint64_t populated;
};
void fp_mem_usage(const struct fp_kernel *k, struct fp_mem_usage *out);

/* accounting helpers */
uint64_t fp_count_mapped(struct fp_kernel *k, int32_t node, uint16_t flag_mask, uint16_t flag_want);
/* CDEF-SKIP-BEGIN */
#endif
/* CDEF-SKIP-END */
