/* The idle_pages record stream: types, sizes and the per-read state.
 * Linux: the RFC's include of ProcIdlePageType and struct ept_idle_ctrl. */
#ifndef FAKEPROC_IDLE_H
#define FAKEPROC_IDLE_H
#include <stddef.h>
#include "internal.h"

enum idle_type {
    PTE_ACCESSED, PMD_ACCESSED, PUD_PRESENT, PTE_DIRTY, PMD_DIRTY,
    PTE_IDLE, PMD_IDLE, PMD_IDLE_PTES, PTE_HOLE, PMD_HOLE, IDLE_NR_TYPES
};

#define IDLE_SET_HVA     0xA0
#define IDLE_KBUF_SIZE   8000
#define IDLE_TAIL_BYTES  9
#define IDLE_BUF_MIN     19   /* two addresses + 3 */
#define IDLE_KBUF_FULL   1

struct idle_ctl {
    struct fp_kernel *k;
    uint8_t *ubuf;
    uint64_t count;        /* the user's count (capped) */
    uint64_t copied;       /* bytes already in ubuf */
    uint64_t next_hva;     /* the cursor: where the last unit ended */
    uint64_t restart;      /* where the walk would continue */
    uint64_t last_va;      /* the duplicate-PMD skip */
    uint64_t gpa_to_hva;   /* 0 in task mode */
    uint32_t scan_flags;
    uint64_t missed;       /* present base pages this read skipped without a report */
    uint64_t unit_end;     /* where the last added unit ended (hva) */
    uint64_t skip_end;     /* the end of the last duplicate-PMD skip (addr space) */
    int64_t used;          /* bytes in kbuf */
    int64_t limit;         /* room in kbuf for this pass, tail excluded */
    int starved;           /* this pass has no room for a SET_HVA and a unit: a read
                            * that ends in it steps over the rest for lack of room */
    uint8_t kbuf[IDLE_KBUF_SIZE];
};

#endif
