package energy.monitor.state;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * A bucket's numbers, kept beside its households: how many it holds (for the household bound),
 * the bytes they take, how many are warm or warming, and the watermark of its last call, which
 * says which households that call would have dropped.
 */
final class Meta {
  long households;
  long bytes;
  long warm;
  long warming;
  long watermarkMs = Long.MIN_VALUE;

  boolean known() {
    return watermarkMs != Long.MIN_VALUE;
  }

  long minOpen(Rules rules) {
    return known() ? rules.firstOpenPane(watermarkMs) : Long.MIN_VALUE;
  }

  long horizonS(Rules rules) {
    return known() ? Math.floorDiv(watermarkMs, 1000) - rules.forgetAfterS : Long.MIN_VALUE;
  }

  /** Whether the bucket still held the household after its last call. */
  boolean holds(Household household, Rules rules) {
    return household.present(minOpen(rules), horizonS(rules), rules.windowS);
  }

  void add(Household household, int size, int warmup) {
    count(household, size, warmup, 1);
  }

  void remove(Household household, int size, int warmup) {
    count(household, size, warmup, -1);
  }

  private void count(Household household, int size, int warmup, int sign) {
    households += sign;
    bytes += (long) sign * size;
    if (household.learning) {
      if (household.warm(warmup)) {
        warm += sign;
      } else {
        warming += sign;
      }
    }
  }

  byte[] encode() {
    return ByteBuffer.allocate(40).order(ByteOrder.LITTLE_ENDIAN).putLong(households).putLong(bytes).putLong(warm)
        .putLong(warming).putLong(watermarkMs).array();
  }

  static Meta decode(byte[] blob) {
    Meta meta = new Meta();
    if (blob != null) {
      ByteBuffer in = ByteBuffer.wrap(blob).order(ByteOrder.LITTLE_ENDIAN);
      meta.households = in.getLong();
      meta.bytes = in.getLong();
      meta.warm = in.getLong();
      meta.warming = in.getLong();
      meta.watermarkMs = in.getLong();
    }
    return meta;
  }
}
