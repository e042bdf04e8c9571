/// The definitions of Specs/determinism.md "Convolution and pooling", literally: plain loops in
/// the stated orders, no packing, no tiles, no threads. Slow; for tests, which require the fast
/// kernels (``Convolution``, ``Pooling``) to reproduce these bits on every path and thread count.
/// Package access: not part of the library's API.
package enum ConvolutionReference {
    /// The input element patch element k = (i·KW + j)·C + c of output pixel (oh, ow) of image n
    /// reads, or +0 in the padding.
    package static func patch(_ g: Convolution.Geometry, _ x: [Float], n: Int, oh: Int, ow: Int, k: Int) -> Float {
        let c = k % g.channels, j = (k / g.channels) % g.kernelWidth, i = k / (g.channels * g.kernelWidth)
        let h = oh * g.strideHeight - g.padTop + i, w = ow * g.strideWidth - g.padLeft + j
        guard h >= 0, h < g.inputHeight, w >= 0, w < g.inputWidth else { return 0 }
        return x[n * g.inputCount + (h * g.inputWidth + w) * g.channels + c]
    }

    /// Y[n, oh, ow, f] = bias[f], then acc = fma(P[r, k], W[f, k], acc) for k in order.
    package static func forward(
        _ g: Convolution.Geometry, batch: Int, input x: [Float], weights: [Float], bias: [Float]
    ) -> [Float] {
        var y = [Float](repeating: 0, count: batch * g.outputCount)
        for n in 0..<batch {
            for oh in 0..<g.outputHeight {
                for ow in 0..<g.outputWidth {
                    for f in 0..<g.filters {
                        var acc = bias[f]
                        for k in 0..<g.patchSize {
                            acc = acc.addingProduct(
                                patch(g, x, n: n, oh: oh, ow: ow, k: k), weights[f * g.patchSize + k])
                        }
                        y[n * g.outputCount + (oh * g.outputWidth + ow) * g.filters + f] = acc
                    }
                }
            }
        }
        return y
    }

    /// dW[f, k] = +0, then acc = fma(dY[r, f], P[r, k], acc) for rows r = (n, oh, ow) in order.
    package static func weightGradient(
        _ g: Convolution.Geometry, batch: Int, input x: [Float], outputGradient dy: [Float]
    ) -> [Float] {
        var dw = [Float](repeating: 0, count: g.weightCount)
        for f in 0..<g.filters {
            for k in 0..<g.patchSize {
                var acc: Float = 0
                for n in 0..<batch {
                    for oh in 0..<g.outputHeight {
                        for ow in 0..<g.outputWidth {
                            let d = dy[n * g.outputCount + (oh * g.outputWidth + ow) * g.filters + f]
                            acc = acc.addingProduct(d, patch(g, x, n: n, oh: oh, ow: ow, k: k))
                        }
                    }
                }
                dw[f * g.patchSize + k] = acc
            }
        }
        return dw
    }

    /// db[f] = +0, then + dY[r, f] for rows in order (unfused).
    package static func biasGradient(_ g: Convolution.Geometry, batch: Int, outputGradient dy: [Float]) -> [Float] {
        var db = [Float](repeating: 0, count: g.filters)
        for f in 0..<g.filters {
            var acc: Float = 0
            for r in 0..<(batch * g.outputHeight * g.outputWidth) { acc = acc + dy[r * g.filters + f] }
            db[f] = acc
        }
        return db
    }

    /// dP[r, k] = +0, then acc = fma(dY[r, f], W[f, k], acc) for f in order; dX = +0, then
    /// + dP[r, k] for each (r, k) reading the element, in increasing r, then k.
    package static func inputGradient(
        _ g: Convolution.Geometry, batch: Int, outputGradient dy: [Float], weights: [Float]
    ) -> [Float] {
        var dx = [Float](repeating: 0, count: batch * g.inputCount)
        for n in 0..<batch {
            for oh in 0..<g.outputHeight {
                for ow in 0..<g.outputWidth {
                    let r = (n * g.outputHeight + oh) * g.outputWidth + ow
                    for k in 0..<g.patchSize {
                        var acc: Float = 0
                        for f in 0..<g.filters {
                            acc = acc.addingProduct(dy[r * g.filters + f], weights[f * g.patchSize + k])
                        }
                        let c = k % g.channels, j = (k / g.channels) % g.kernelWidth,
                            i = k / (g.channels * g.kernelWidth)
                        let h = oh * g.strideHeight - g.padTop + i, w = ow * g.strideWidth - g.padLeft + j
                        guard h >= 0, h < g.inputHeight, w >= 0, w < g.inputWidth else { continue }
                        let e = n * g.inputCount + (h * g.inputWidth + w) * g.channels + c
                        dx[e] = dx[e] + acc
                    }
                }
            }
        }
        return dx
    }

    /// The in-image rows and columns of output (oh, ow)'s window.
    package static func window(_ g: Pooling.Geometry, oh: Int, ow: Int) -> (rows: Range<Int>, cols: Range<Int>) {
        let top = oh * g.strideHeight - g.padTop, left = ow * g.strideWidth - g.padLeft
        return (
            max(top, 0)..<min(top + g.poolHeight, g.inputHeight), max(left, 0)..<min(left + g.poolWidth, g.inputWidth)
        )
    }

    /// Max pooling with the first-maximum rule; argmax is the index within the image.
    package static func maxForward(
        _ g: Pooling.Geometry, batch: Int, input x: [Float]
    ) -> (output: [Float], argmax: [Int32]) {
        var y = [Float](repeating: 0, count: batch * g.outputCount)
        var a = [Int32](repeating: 0, count: batch * g.outputCount)
        for n in 0..<batch {
            for oh in 0..<g.outputHeight {
                for ow in 0..<g.outputWidth {
                    let (rows, cols) = window(g, oh: oh, ow: ow)
                    for c in 0..<g.channels {
                        var best = -1
                        var m: Float = 0
                        for h in rows {
                            for w in cols {
                                let e = (h * g.inputWidth + w) * g.channels + c
                                let v = x[n * g.inputCount + e]
                                if best < 0 || v > m {
                                    m = v
                                    best = e
                                }
                            }
                        }
                        let o = n * g.outputCount + (oh * g.outputWidth + ow) * g.channels + c
                        y[o] = m
                        a[o] = Int32(best)
                    }
                }
            }
        }
        return (y, a)
    }

    /// dX = +0, then dX[argmax] += dY for outputs in order.
    package static func maxBackward(
        _ g: Pooling.Geometry, batch: Int, outputGradient dy: [Float], argmax: [Int32]
    ) -> [Float] {
        var dx = [Float](repeating: 0, count: batch * g.inputCount)
        for n in 0..<batch {
            for o in 0..<g.outputCount {
                let e = n * g.inputCount + Int(argmax[n * g.outputCount + o])
                dx[e] = dx[e] + dy[n * g.outputCount + o]
            }
        }
        return dx
    }

    /// (+0 + in-image elements, row-major) / count.
    package static func averageForward(_ g: Pooling.Geometry, batch: Int, input x: [Float]) -> [Float] {
        var y = [Float](repeating: 0, count: batch * g.outputCount)
        for n in 0..<batch {
            for oh in 0..<g.outputHeight {
                for ow in 0..<g.outputWidth {
                    let (rows, cols) = window(g, oh: oh, ow: ow)
                    let count = Float(rows.count * cols.count)
                    for c in 0..<g.channels {
                        var s: Float = 0
                        for h in rows {
                            for w in cols { s = s + x[n * g.inputCount + (h * g.inputWidth + w) * g.channels + c] }
                        }
                        y[n * g.outputCount + (oh * g.outputWidth + ow) * g.channels + c] = s / count
                    }
                }
            }
        }
        return y
    }

    /// dX = +0, then each in-image element += dY / count, outputs in order.
    package static func averageBackward(_ g: Pooling.Geometry, batch: Int, outputGradient dy: [Float]) -> [Float] {
        var dx = [Float](repeating: 0, count: batch * g.inputCount)
        for n in 0..<batch {
            for oh in 0..<g.outputHeight {
                for ow in 0..<g.outputWidth {
                    let (rows, cols) = window(g, oh: oh, ow: ow)
                    let count = Float(rows.count * cols.count)
                    for c in 0..<g.channels {
                        let q = dy[n * g.outputCount + (oh * g.outputWidth + ow) * g.channels + c] / count
                        for h in rows {
                            for w in cols {
                                let e = n * g.inputCount + (h * g.inputWidth + w) * g.channels + c
                                dx[e] = dx[e] + q
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// (+0 + every pixel, row-major) / Float(H·W) per channel.
    package static func globalAverageForward(
        height: Int, width: Int, channels: Int, batch: Int, input x: [Float]
    ) -> [Float] {
        let hw = height * width
        var y = [Float](repeating: 0, count: batch * channels)
        for n in 0..<batch {
            for c in 0..<channels {
                var s: Float = 0
                for p in 0..<hw { s = s + x[(n * hw + p) * channels + c] }
                y[n * channels + c] = s / Float(hw)
            }
        }
        return y
    }

    /// Every element = dY / Float(H·W).
    package static func globalAverageBackward(
        height: Int, width: Int, channels: Int, batch: Int, outputGradient dy: [Float]
    ) -> [Float] {
        let hw = height * width
        var dx = [Float](repeating: 0, count: batch * hw * channels)
        for n in 0..<batch {
            for p in 0..<hw {
                for c in 0..<channels { dx[(n * hw + p) * channels + c] = dy[n * channels + c] / Float(hw) }
            }
        }
        return dx
    }
}
