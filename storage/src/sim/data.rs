//! File data: contents in 4 KiB pages, the queue of data operations not
//! yet durable, and what a crash keeps of them (prefixes, torn sectors).

use super::*;

/// File contents in 4 KiB pages. Absent pages are holes and read as zeros.
/// Pages are shared between the durable and current copies until one of
/// them writes, so keeping both costs little.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Pages {
    pub(super) size: u64,
    /// Invariant: no page at or beyond `ceil(size / PAGE_BYTES)`, and the
    /// bytes of the last page beyond `size` are zero.
    pub(super) pages: BTreeMap<u64, Arc<[u8; PAGE_BYTES]>>,
}

impl Pages {
    pub(super) fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let page = PAGE_BYTES as u64;
        for (idx, data) in self.pages.range(offset / page..=(end - 1) / page) {
            let start = (idx * page).max(offset);
            let stop = ((idx + 1) * page).min(end);
            let src = &data[(start - idx * page) as usize..(stop - idx * page) as usize];
            out[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(src);
        }
        out
    }

    pub(super) fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let page = PAGE_BYTES as u64;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let in_page = (pos % page) as usize;
            let n = rest.len().min(PAGE_BYTES - in_page);
            let p = self
                .pages
                .entry(pos / page)
                .or_insert_with(|| Arc::new([0u8; PAGE_BYTES]));
            Arc::make_mut(p)[in_page..in_page + n].copy_from_slice(&rest[..n]);
            pos += n as u64;
            rest = &rest[n..];
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    pub(super) fn truncate(&mut self, size: u64) {
        if size < self.size {
            let page = PAGE_BYTES as u64;
            drop(self.pages.split_off(&size.div_ceil(page)));
            let tail = (size % page) as usize;
            if tail != 0 {
                if let Some(p) = self.pages.get_mut(&(size / page)) {
                    Arc::make_mut(p)[tail..].fill(0);
                }
            }
        }
        self.size = size;
    }

    /// Zero `[offset, offset + len)` and drop the pages it covers whole;
    /// the size stays. As ext4 does, a range reaching the end of the file
    /// covers the rest of its last page too, so that page goes as well.
    pub(super) fn punch(&mut self, offset: u64, len: u64) {
        let page = PAGE_BYTES as u64;
        let mut end = offset.saturating_add(len);
        if end >= self.size {
            end = self.size.next_multiple_of(page);
        }
        if offset >= end {
            return;
        }
        let touched: Vec<u64> = self
            .pages
            .range(offset / page..=(end - 1) / page)
            .map(|(idx, _)| *idx)
            .collect();
        for idx in touched {
            let start = (idx * page).max(offset) - idx * page;
            let stop = ((idx + 1) * page).min(end) - idx * page;
            if start == 0 && stop == page {
                self.pages.remove(&idx);
            } else if let Some(p) = self.pages.get_mut(&idx) {
                Arc::make_mut(p)[start as usize..stop as usize].fill(0);
            }
        }
    }

    pub(super) fn apply(&mut self, op: &DataOp) {
        match op {
            DataOp::Write { offset, data } => self.write(*offset, data),
            DataOp::Truncate { size } => self.truncate(*size),
            DataOp::Punch { offset, len } => self.punch(*offset, *len),
        }
    }

    pub(super) fn allocated_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE_BYTES as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DataOp {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    Truncate {
        size: u64,
    },
    /// A hole punched (never torn: it changes no bytes a sector at a time).
    Punch {
        offset: u64,
        len: u64,
    },
}

impl DataOp {
    pub(super) fn weight_bytes(&self) -> u64 {
        match self {
            DataOp::Write { data, .. } => data.len() as u64,
            DataOp::Truncate { .. } | DataOp::Punch { .. } => 0,
        }
    }
}

/// One regular file's data. Kept while a crash could still bring its inode
/// back (it is in the current or durable metadata, or was created in the
/// uncommitted journal), since an unlinked file can return with its data.
#[derive(Debug, Clone, Default)]
pub(super) struct FileData {
    pub(super) durable: Pages,
    /// `durable` with `pending` applied.
    pub(super) current: Pages,
    pub(super) pending: VecDeque<DataOp>,
    pub(super) pending_bytes: u64,
    /// Latent sector errors: sorted, disjoint `[start, end)` ranges. They
    /// belong to the medium, so they survive crashes.
    pub(super) latent: Vec<(u64, u64)>,
}

impl FileData {
    pub(super) fn push(&mut self, op: DataOp) {
        self.current.apply(&op);
        self.pending_bytes += op.weight_bytes();
        self.pending.push_back(op);
        // Page-cache writeback, which also bounds the queue: the oldest
        // operations reach the disk on their own.
        while self.pending.len() > PENDING_DATA_OPS_MAX
            || self.pending_bytes > PENDING_DATA_BYTES_MAX
        {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            debug_assert!(
                self.pending_bytes >= old.weight_bytes(),
                "queued bytes count every queued operation"
            );
            self.pending_bytes -= old.weight_bytes();
            self.durable.apply(&old);
        }
    }

    pub(super) fn sync(&mut self) {
        self.durable = self.current.clone();
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// Power loss for this file: a prefix of the queue survives, and maybe a
    /// torn piece of the first write that did not.
    pub(super) fn crash(&mut self, rng: &mut DetRng) {
        let kept = rng.range_inclusive(0, self.pending.len() as u64) as usize;
        for op in self.pending.drain(..kept) {
            self.durable.apply(&op);
        }
        if let Some(DataOp::Write { offset, data }) = self.pending.front() {
            if rng.chance(0.5) {
                // Whole sectors only, and strictly fewer than the write had.
                let sectors = (data.len() as u64).div_ceil(SECTOR_BYTES);
                let torn = (rng.below(sectors) * SECTOR_BYTES) as usize;
                self.durable.write(*offset, &data[..torn]);
            }
        }
        self.pending.clear();
        self.pending_bytes = 0;
        self.current = self.durable.clone();
    }

    pub(super) fn latent_overlaps(&self, start: u64, end: u64) -> bool {
        self.latent.iter().any(|&(s, e)| s < end && start < e)
    }

    /// Remove `[start, end)` from the latent ranges (rewritten or
    /// deallocated sectors no longer fail).
    pub(super) fn clear_latent(&mut self, start: u64, end: u64) {
        if start >= end || !self.latent_overlaps(start, end) {
            return;
        }
        let mut out = Vec::with_capacity(self.latent.len() + 1);
        for &(s, e) in &self.latent {
            if e <= start || s >= end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.latent = out;
    }
}
