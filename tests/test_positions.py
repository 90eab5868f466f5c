"""Where to sample: random and grid patch positions, and the step sampler of the training loop."""

from __future__ import annotations

import numpy as np

from aesr_sci.data.positions import GlobalIndex, GridPositions, Position, RandomPositions, StepSampler


def test_random_positions_start_on_multiples_of_the_scale_inside_the_file():
    shapes, patches, scales = [(20, 16, 12), (40, 16, 12)], [(8, 8, 4)] * 2, [(2, 2, 4)] * 2
    positions = RandomPositions(shapes, patches, scales)
    rng = np.random.default_rng(0)
    files = []
    for _ in range(300):
        f = positions.file(rng)
        p = positions.position(rng, f)
        files.append(f)
        assert isinstance(p, Position) and p.file == f
        assert all(a % s == 0 for a, s in zip(p.start, scales[f]))
        assert all(
            a >= 0 and b <= n and b - a == k for a, b, n, k in zip(p.start, p.stop, shapes[f], patches[f])
        )
    # files are drawn in proportion to their size (1 : 2)
    assert 0.58 < np.mean(files) < 0.75
    seen = {positions.position(np.random.default_rng(i), 0).start[0] for i in range(200)}
    assert seen == {0, 2, 4, 6, 8, 10, 12}  # every allowed start is reachable, the last flush with the end


def test_grid_positions_cover_every_voxel_and_end_flush():
    grid = GridPositions([(20, 16), (8, 8)], [(8, 8), (8, 8)], [(8, 8), (8, 8)])
    assert len(grid) == 3 * 2 + 1
    covered = [np.zeros((20, 16), int), np.zeros((8, 8), int)]
    for i in range(len(grid)):
        p = grid[i]
        covered[p.file][p.start[0] : p.stop[0], p.start[1] : p.stop[1]] += 1
    assert all((c >= 1).all() for c in covered)
    assert grid[4].start == (12, 0)  # the last patch on an axis is flush with the end (20 - 8)
    assert [grid[i].file for i in range(len(grid))] == [0] * 6 + [1]


def test_step_sampler_and_global_index_give_each_rank_its_own_samples():
    class Items:
        def __init__(self):
            self.epoch = 0

        def __len__(self):
            return 5

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, i):
            return (self.epoch, i)

    ranks = [list(StepSampler(start=2, stop=4, batch_size=3, rank=r, world=2)) for r in (0, 1)]
    assert ranks[0] == [12, 13, 14, 18, 19, 20] and ranks[1] == [15, 16, 17, 21, 22, 23]
    assert len(StepSampler(start=2, stop=4, batch_size=3, rank=0, world=2)) == 6
    index = GlobalIndex(Items())
    assert index[12] == (2, 2) and index[4] == (0, 4)
