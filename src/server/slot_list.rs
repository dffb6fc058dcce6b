//! A list of values with stable indexes, whose freed slots are reused first: the service's
//! registered connections' queues, and the bundled server's task handles.

/// Values at stable indexes; removing one frees its index for the next insert.
#[derive(Debug)]
pub(crate) struct SlotList<T> {
    /// Invariant: `slots[i]` is `None` exactly when `i` is in `free`.
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for SlotList<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> SlotList<T> {
    /// Stores `value`; returns its index.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(value);
                i
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }

    /// Takes the value at `i` out (`None` if there is none), freeing the index.
    pub(crate) fn remove(&mut self, i: usize) -> Option<T> {
        let value = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        Some(value)
    }

    /// The value at `i`, if any.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// Whether no value is stored.
    pub(crate) fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// The stored values.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_stay_put_and_freed_ones_are_reused() {
        let mut list = SlotList::default();
        let (a, b, c) = (list.insert("a"), list.insert("b"), list.insert("c"));
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(list.remove(b), Some("b"));
        assert_eq!(list.remove(b), None, "removed once");
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(list.insert("d"), b, "the freed index first");
        *list.get_mut(c).unwrap() = "e";
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), ["a", "d", "e"]);
        for i in [a, b, c] {
            list.remove(i);
        }
        assert!(list.is_empty());
        assert_eq!(list.remove(7), None, "out of range");
    }
}
