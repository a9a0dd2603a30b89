//! [`RefundOnDrop`]: a reservation given back if its waiter goes away, shared
//! by [`FreqLimit`](crate::FreqLimit) and the layer's response future.

use std::sync::Arc;

use super::FreqLimitBackend;
use crate::decision::Admission;

/// Something that holds a backend: a borrow (`FreqLimit` awaiting in place) or
/// a shared config (the layer's `'static` response future).
pub(crate) trait HoldsBackend {
    /// The backend held.
    type Backend: FreqLimitBackend;

    /// The backend to give slots back to.
    fn backend(&self) -> &Self::Backend;
}

impl<B: FreqLimitBackend> HoldsBackend for &B {
    type Backend = B;

    fn backend(&self) -> &B {
        self
    }
}

impl<T: HoldsBackend> HoldsBackend for Arc<T> {
    type Backend = T::Backend;

    fn backend(&self) -> &Self::Backend {
        (**self).backend()
    }
}

/// A reservation that is given back ([`FreqLimitBackend::refund`]) if this is
/// dropped while it is still [`waiting`](Self::waiting): the caller stopped
/// waiting for its slot (a timeout, a client that hung up). Once the slot has
/// come, [`used`](Self::used) keeps it.
pub(crate) struct RefundOnDrop<H: HoldsBackend> {
    holder: H,
    key: Option<<H::Backend as FreqLimitBackend>::Key>,
    waiting: Option<Admission>,
}

impl<H: HoldsBackend> RefundOnDrop<H> {
    /// Holds `key`'s slot, nothing to give back yet.
    pub(crate) fn new(holder: H, key: Option<<H::Backend as FreqLimitBackend>::Key>) -> Self {
        Self {
            holder,
            key,
            waiting: None,
        }
    }

    /// The caller now waits for `admission`'s slot: give it back if dropped.
    pub(crate) fn waiting(&mut self, admission: Admission) {
        self.waiting = Some(admission);
    }

    /// The slot came and is used: nothing to give back.
    pub(crate) fn used(&mut self) {
        self.waiting = None;
    }

    /// What holds the backend.
    pub(crate) fn holder(&self) -> &H {
        &self.holder
    }
}

impl<H: HoldsBackend> Drop for RefundOnDrop<H> {
    fn drop(&mut self) {
        if let Some(admission) = self.waiting.take() {
            self.holder.backend().refund(self.key.as_ref(), &admission);
        }
    }
}
