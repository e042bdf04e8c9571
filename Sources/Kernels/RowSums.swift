import CKernels

/// Sums of squares of the rows of a matrix, as max-norm defines them (Specs/determinism.md
/// §4.6): `+0 + w[u][0]·w[u][0] + w[u][1]·w[u][1] + ...`, each sum in increasing order with
/// every multiplication and addition rounded on its own. CKernels `dm_row_sum_squares` advances
/// several rows at once (independent chains), which changes no bit.
package enum RowSums {
    /// `out[u]` = the sum of squares of row `u` (at `w + u·ld`, `length` values), `u` in
    /// `0 ..< rows`.
    package static func sumOfSquares(
        _ w: UnsafePointer<Float>, rows: Int, length: Int, ld: Int, into out: UnsafeMutablePointer<Float>
    ) {
        precondition(rows >= 0 && length >= 0 && ld >= length, "RowSums: bad shape")
        dm_row_sum_squares(w, rows, length, ld, out)
    }
}
