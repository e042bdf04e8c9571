package import DropModelBase

extension LayerInfo {
    /// The bytes of the layer's weight and bias data in its element type (0 for a kind without
    /// weights): the unit of a verb's ``DropModelBase/WorkProgress``.
    public var dataBytes: Int { parameterCount * dtype.bytes }
}

extension ModelInfo {
    /// The bytes of all weight and bias data (``LayerInfo/dataBytes`` summed).
    public var dataBytes: Int { layers.reduce(0) { $0 + $1.dataBytes } }
}

/// Reports the bytes of a verb that works layer by layer (or block by block within a layer):
/// what the observer hears only grows (a pass started again, ``restart()``, reports nothing
/// until it gets past where the previous one was), and ``finish()`` ends at the total.
package final class ProgressCounter {
    let observer: ProgressObserver?
    let total: Int
    private var position = 0
    private var reported = 0

    package init(total: Int, _ observer: ProgressObserver?) {
        self.total = total
        self.observer = observer
    }

    /// `bytes` more are done.
    package func add(_ bytes: Int) {
        position = max(0, min(total, position + bytes))
        guard let observer, position > reported else { return }
        reported = position
        observer(WorkProgress(done: position, total: total))
    }

    /// The first `bytes` are done.
    package func reach(_ bytes: Int) { add(bytes - position) }

    /// The work starts again from the beginning.
    package func restart() { position = 0 }

    /// Everything is done: reports `done == total` unless that was the last report.
    package func finish() {
        position = total
        guard let observer, reported < total || total == 0 else { return }
        reported = total
        observer(WorkProgress(done: total, total: total))
    }
}
