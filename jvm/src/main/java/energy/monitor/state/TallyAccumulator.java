package energy.monitor.state;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.apache.spark.util.AccumulatorV2;

/**
 * The operator's tally lines (Tally), by batch: the tasks add them, the driver merges them, and
 * the listener takes a batch's out when Spark reports the batch, so the accumulator holds a batch
 * or two at most.
 */
public final class TallyAccumulator extends AccumulatorV2<String, Map<Long, List<String>>> {
  private final TreeMap<Long, List<String>> lines = new TreeMap<>();

  @Override
  public synchronized boolean isZero() {
    return lines.isEmpty();
  }

  @Override
  public synchronized TallyAccumulator copy() {
    TallyAccumulator copy = new TallyAccumulator();
    lines.forEach((batch, batchLines) -> copy.lines.put(batch, new ArrayList<>(batchLines)));
    return copy;
  }

  @Override
  public synchronized void reset() {
    lines.clear();
  }

  @Override
  public synchronized void add(String line) {
    long batch = Long.parseLong(line.substring(0, line.indexOf('|')));
    lines.computeIfAbsent(batch, b -> new ArrayList<>()).add(line);
  }

  @Override
  public void merge(AccumulatorV2<String, Map<Long, List<String>>> other) {
    Map<Long, List<String>> more = other.value();
    synchronized (this) {
      more.forEach((batch, batchLines) -> lines.computeIfAbsent(batch, b -> new ArrayList<>()).addAll(batchLines));
    }
  }

  @Override
  public synchronized Map<Long, List<String>> value() {
    TreeMap<Long, List<String>> copy = new TreeMap<>();
    lines.forEach((batch, batchLines) -> copy.put(batch, new ArrayList<>(batchLines)));
    return copy;
  }

  /** The lines of every batch up to `batch`, taken out. */
  public synchronized List<String> take(long batch) {
    List<String> taken = new ArrayList<>();
    Map<Long, List<String>> done = lines.headMap(batch, true);
    done.values().forEach(taken::addAll);
    done.clear();
    return taken;
  }
}
