"""Hide-and-Seek (classic_wsss.md, HaS row: grid patches hidden with prob 0.5, fill = dataset mean):
hidden pixels written out by hand on a tiny image whose last row/column of cells is partial."""
import numpy as np

from wsss_mmseg.classic.hide_and_seek import apply_hidden_cells


def test_hand_made_cells_on_a_5x7_image_with_grid_3():
    img = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    # 2 x 3 cells of side 3: rows 0-2 | 3-4, columns 0-2 | 3-5 | 6
    cells = np.array([[True, False, False],
                      [False, False, True]])
    out = apply_hidden_cells(img, cells, grid_size=3, fill=(7.6, 0.2, 255.0))
    hidden = np.zeros((5, 7), bool)
    hidden[0:3, 0:3] = True          # cell (0, 0)
    hidden[3:5, 6:7] = True          # cell (1, 2): the partial bottom-right corner
    assert (out[hidden] == np.array([8, 0, 255], np.uint8)).all()   # fill rounded to uint8
    assert np.array_equal(out[~hidden], img[~hidden])
    assert hidden.sum() == 9 + 2
