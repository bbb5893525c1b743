//! The compressed Morton code: the chunk ID of a grid position in sharded volumes.

/// Compressed Morton code of grid position `g` (`[x, y, z]`) in a grid of `grid` chunks:
/// bits of x, y, z interleaved from the least significant, skipping, for each axis, bits that
/// are zero for every position in the grid. `None` if the code needs more than 64 bits or `g`
/// lies outside the grid.
pub fn compressed_morton_code(g: [u64; 3], grid: [u64; 3]) -> Option<u64> {
    if (0..3).any(|a| g[a] >= grid[a]) {
        return None;
    }
    let mut code = 0u64;
    let mut j = 0u32;
    for i in 0..64u32 {
        let mut any = false;
        for a in 0..3 {
            // Bit i of this axis is used when some grid coordinate has it: 2^i < grid.
            if (1u128 << i) < u128::from(grid[a]) {
                any = true;
                if j >= 64 {
                    return None;
                }
                code |= ((g[a] >> i) & 1) << j;
                j += 1;
            }
        }
        if !any {
            break;
        }
    }
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_morton_when_grid_is_cubic() {
        let grid = [8, 8, 8];
        assert_eq!(compressed_morton_code([0, 0, 0], grid), Some(0));
        assert_eq!(compressed_morton_code([1, 0, 0], grid), Some(0b001));
        assert_eq!(compressed_morton_code([0, 1, 0], grid), Some(0b010));
        assert_eq!(compressed_morton_code([0, 0, 1], grid), Some(0b100));
        assert_eq!(compressed_morton_code([7, 7, 7], grid), Some(0b111_111_111));
        assert_eq!(compressed_morton_code([2, 0, 0], grid), Some(0b001_000));
    }

    #[test]
    fn skips_bits_of_short_axes() {
        // x has 4 bits (grid 16), y 1 bit (grid 2), z none (grid 1).
        let grid = [16, 2, 1];
        // bit order: x0 y0 x1 x2 x3
        assert_eq!(compressed_morton_code([0, 1, 0], grid), Some(0b00010));
        assert_eq!(compressed_morton_code([0b1111, 0, 0], grid), Some(0b11101));
        assert_eq!(compressed_morton_code([0b0100, 1, 0], grid), Some(0b01010));
        // Codes of a grid are a bijection onto 0..product when every axis is a power of two.
        let mut seen: Vec<u64> = (0..16)
            .flat_map(|x| (0..2).map(move |y| compressed_morton_code([x, y, 0], grid).unwrap()))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn rejects_outside_grid_and_overflow() {
        assert_eq!(compressed_morton_code([3, 0, 0], [3, 1, 1]), None);
        assert!(compressed_morton_code([2, 0, 0], [3, 1, 1]).is_some());
        let big = 1u64 << 22;
        assert_eq!(compressed_morton_code([0, 0, 0], [big, big, big]), None);
        assert!(compressed_morton_code([0, 0, 0], [1 << 21, 1 << 21, 1 << 21]).is_some());
    }
}
