package energy.monitor.state;

/**
 * One output row: an alert (kind 0 or 1), a reading the household bound refused (kind 2: its
 * event second as windowStart, its record's position as windows) or a dead letter (the document).
 */
final class Output {
  static final int REFUSED = 2;

  final long household;
  final long windowStart;
  final long units;
  final String deadLetter;
  final int kind;
  final double threshold;
  final double usual;
  final double excess;
  final long windows;
  final long slot;

  Output(long household, long windowStart, long units, String deadLetter, int kind, double threshold, double usual,
         double excess, long windows, long slot) {
    this.household = household;
    this.windowStart = windowStart;
    this.units = units;
    this.deadLetter = deadLetter;
    this.kind = kind;
    this.threshold = threshold;
    this.usual = usual;
    this.excess = excess;
    this.windows = windows;
    this.slot = slot;
  }

  static Output of(Alert alert, long slideS) {
    return new Output(alert.household, alert.startPane * slideS, alert.units, null, alert.kind, alert.threshold,
        alert.usual, alert.excess, alert.windows, alert.slot);
  }

  static Output refused(long household, long epochS, long units, long position) {
    return new Output(household, epochS, units, null, REFUSED, Double.NaN, Double.NaN, Double.NaN, position, 0);
  }

  static Output letter(String document) {
    return new Output(0, 0, 0, document, 0, Double.NaN, Double.NaN, Double.NaN, 0, 0);
  }
}
