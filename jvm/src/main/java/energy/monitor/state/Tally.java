package energy.monitor.state;

import java.util.Map;
import java.util.TreeMap;

/**
 * What one call of the operator (one bucket, one batch) did, as one line for the accumulator the
 * driver reads (pipeline/job/jvm.py parses it into BatchCounts):
 * `batch|threshold alerts|baseline alerts|late|duplicates|reason=n,...|centisecond=n,...|bucket:households:bytes:warm:warming`.
 */
final class Tally {
  long thresholdAlerts;
  long baselineAlerts;
  long late;
  long duplicates;
  final Map<String, Long> reasons = new TreeMap<>();
  final Map<Long, Long> crossings = new TreeMap<>();

  void alert(Alert alert) {
    if (alert.kind == Alert.BASELINE) {
      baselineAlerts++;
    } else {
      thresholdAlerts++;
    }
    crossings.merge(Math.floorDiv(alert.crossedMs, 10), 1L, Long::sum);
  }

  String line(long batch, long bucket, long households, long bytes, long warm, long warming) {
    StringBuilder out = new StringBuilder();
    out.append(batch).append('|').append(thresholdAlerts).append('|').append(baselineAlerts).append('|')
        .append(late).append('|').append(duplicates).append('|');
    join(out, reasons);
    out.append('|');
    join(out, crossings);
    out.append('|').append(bucket).append(':').append(households).append(':').append(bytes).append(':')
        .append(warm).append(':').append(warming);
    return out.toString();
  }

  private static void join(StringBuilder out, Map<?, Long> counts) {
    boolean first = true;
    for (Map.Entry<?, Long> entry : counts.entrySet()) {
      if (!first) {
        out.append(',');
      }
      out.append(entry.getKey()).append('=').append(entry.getValue());
      first = false;
    }
  }
}
