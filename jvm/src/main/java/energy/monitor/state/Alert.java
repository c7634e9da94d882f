package energy.monitor.state;

/** An alert of either rule, with what explains it (the baseline rule's numbers; NaN and 0 for the fixed rule's). */
final class Alert {
  static final int THRESHOLD = 0;
  static final int BASELINE = 1;

  final long household;
  final long startPane;
  final long units;
  final int kind;
  final double threshold;
  final double usual;
  final double excess;
  final long windows;
  final long slot;
  final long crossedMs;

  Alert(long household, long startPane, long units, int kind, double threshold, double usual, double excess,
        long windows, long slot, long crossedMs) {
    this.household = household;
    this.startPane = startPane;
    this.units = units;
    this.kind = kind;
    this.threshold = threshold;
    this.usual = usual;
    this.excess = excess;
    this.windows = windows;
    this.slot = slot;
    this.crossedMs = crossedMs;
  }

  static Alert fixed(long household, long startPane, long units, long crossedMs) {
    return new Alert(household, startPane, units, THRESHOLD, Double.NaN, Double.NaN, Double.NaN, 0, 0, crossedMs);
  }
}
