"""A probe of glibc's mmap threshold: as a one-item dataset in a DataLoader worker
(``tests/test_pseudo/test_pipeline.py``) or called in a fresh interpreter (``test_heap.py``);
a module of its own so that a spawned worker or a subprocess can import it by name."""
import ctypes


class MmappedBlocksAfterThresholdRaise:
    """In the worker: after glibc's dynamic threshold was raised to 24 MiB, does a block
    that the heap's free space cannot hold get its own mapping (1) or grow the heap (0)?"""

    def __len__(self):
        return 1

    def __getitem__(self, _):
        libc = ctypes.CDLL('libc.so.6')

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',
                                                       'usmblks', 'fsmblks', 'uordblks', 'fordblks',
                                                       'keepcost')]

        libc.mallinfo2.restype = MallInfo2
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.free(libc.malloc(24 << 20))  # a freed mapped block raises a dynamic threshold to its size
        # glibc maps a block only when the heap's free chunks cannot serve it: ask for more
        # than all of them together (and less than the 24 MiB threshold)
        size = max(8 << 20, libc.mallinfo2().fordblks + (1 << 20))
        if size >= 23 << 20:
            return -1
        before = libc.mallinfo2().hblks
        block = libc.malloc(size)
        grown = libc.mallinfo2().hblks - before
        libc.free(block)
        return grown
