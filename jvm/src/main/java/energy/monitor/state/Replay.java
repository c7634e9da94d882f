package energy.monitor.state;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.BiConsumer;

/**
 * The operator's step without Spark, for the tests that compare it with the Python state machine
 * and the reference model (tests/test_jvm_operator.py): batches of readings in, each bucket's
 * households kept in a map as the operator keeps them in its MapState.
 *
 * <p>Input, little-endian longs: the number of batches; per batch its watermark (ms) and its
 * number of readings, then per reading: bucket, household, epoch second, nano-kWh, record time
 * (ms), position. Output: the number of rows, then per row 10 longs: batch, kind, household,
 * window start (s), units, the bits of threshold, usual and excess, windows, slot; then per
 * batch its late and duplicate readings and the households held after it (those its buckets' last
 * calls kept, counted exactly).
 */
public final class Replay {
  private Replay() {
  }

  /** `seed`: seed bytes (Seed), empty for none. */
  public static byte[] run(String rulesText, byte[] input, byte[] seed) {
    Rules rules = new Rules(rulesText);
    Seed adopted = seed.length == 0 ? null : Seed.of(seed);
    ByteBuffer in = ByteBuffer.wrap(input).order(ByteOrder.LITTLE_ENDIAN);
    Map<Long, MapStore> stores = new HashMap<>();
    Map<Long, Meta> metas = new HashMap<>();
    List<long[]> rows = new ArrayList<>();
    long batches = in.getLong();
    long[][] counts = new long[(int) batches][3];
    for (int b = 0; b < batches; b++) {
      final int index = b;
      long watermarkMs = in.getLong();
      long n = in.getLong();
      Map<Long, BucketStep> steps = new TreeMap<>();
      for (long i = 0; i < n; i++) {
        long bucket = in.getLong();
        steps.computeIfAbsent(bucket, k -> new BucketStep(rules, adopted))
            .reading(in.getLong(), in.getLong(), in.getLong(), in.getLong(), in.getLong());
      }
      for (Map.Entry<Long, BucketStep> entry : steps.entrySet()) {
        Meta meta = metas.computeIfAbsent(entry.getKey(), k -> new Meta());
        BucketStep step = entry.getValue();
        for (Output o : step.run(watermarkMs, stores.computeIfAbsent(entry.getKey(), k -> new MapStore()), meta)) {
          rows.add(new long[] {b, o.kind, o.household, o.windowStart, o.units, Double.doubleToRawLongBits(o.threshold),
              Double.doubleToRawLongBits(o.usual), Double.doubleToRawLongBits(o.excess), o.windows, o.slot});
        }
        counts[b][0] += step.tally.late;
        counts[b][1] += step.tally.duplicates;
      }
      for (Map.Entry<Long, Meta> entry : metas.entrySet()) {
        Meta meta = entry.getValue();
        stores.get(entry.getKey()).forEach((code, blob) -> {
          if (meta.holds(Household.decode(blob), rules)) {
            counts[index][2]++;
          }
        });
      }
    }
    ByteBuffer out = ByteBuffer.allocate(8 + rows.size() * 80 + counts.length * 24).order(ByteOrder.LITTLE_ENDIAN);
    out.putLong(rows.size());
    for (long[] row : rows) {
      for (long value : row) {
        out.putLong(value);
      }
    }
    for (long[] batch : counts) {
      out.putLong(batch[0]).putLong(batch[1]).putLong(batch[2]);
    }
    return out.array();
  }

  private static final class MapStore implements Store {
    private final Map<Long, byte[]> map = new HashMap<>();

    @Override
    public byte[] get(long household) {
      return map.get(household);
    }

    @Override
    public void put(long household, byte[] blob) {
      map.put(household, blob);
    }

    @Override
    public void remove(long household) {
      map.remove(household);
    }

    @Override
    public void forEach(BiConsumer<Long, byte[]> action) {
      map.forEach(action);
    }
  }
}
