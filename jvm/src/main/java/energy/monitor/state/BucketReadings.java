package energy.monitor.state;

import java.util.Arrays;

/**
 * A bucket's readings of one micro-batch, grouped by household: the households numbered in the
 * order their first reading arrived, each one's readings in the order they arrived. Flat arrays
 * and an open-addressing index rather than a map of lists: a sparse fleet's batch holds thousands
 * of households a bucket with a reading or two each, and boxed maps cost more than their step.
 */
final class BucketReadings {
  private static final long SPREAD = 0x9E3779B97F4A7C15L;

  /** The households' codes, by number. */
  long[] codes = new long[16];
  int households;
  /** After group(): household i's readings are at [start[i], start[i + 1]) of the columns below. */
  int[] start;
  long[] epochS = new long[16];
  long[] units = new long[16];
  long[] recordMs = new long[16];
  long[] positions = new long[16];
  private int[] owner = new int[16];
  private int readings;
  private long[] slotCodes = new long[32];
  private int[] slotNumbers = new int[32];  // the household's number + 1; 0: a free slot
  private int shift = 64 - 5;

  void add(long code, long epoch, long kwhUnits, long record, long position) {
    if (readings == owner.length) {
      int size = 2 * readings;
      owner = Arrays.copyOf(owner, size);
      epochS = Arrays.copyOf(epochS, size);
      units = Arrays.copyOf(units, size);
      recordMs = Arrays.copyOf(recordMs, size);
      positions = Arrays.copyOf(positions, size);
    }
    owner[readings] = number(code);
    epochS[readings] = epoch;
    units[readings] = kwhUnits;
    recordMs[readings] = record;
    positions[readings++] = position;
  }

  /** The household's number, or -1 if the batch holds no reading of it. */
  int find(long code) {
    return slotNumbers[probe(code)] - 1;
  }

  /** Sorts the readings by household, stably; called once, after the last add. */
  void group() {
    start = new int[households + 1];
    for (int i = 0; i < readings; i++) {
      start[owner[i] + 1]++;
    }
    for (int h = 0; h < households; h++) {
      start[h + 1] += start[h];
    }
    int[] next = Arrays.copyOf(start, households);
    long[][] columns = {epochS, units, recordMs, positions};
    long[][] grouped = new long[columns.length][readings];
    for (int i = 0; i < readings; i++) {
      int to = next[owner[i]]++;
      for (int c = 0; c < columns.length; c++) {
        grouped[c][to] = columns[c][i];
      }
    }
    epochS = grouped[0];
    units = grouped[1];
    recordMs = grouped[2];
    positions = grouped[3];
  }

  private int number(long code) {
    int slot = probe(code);
    if (slotNumbers[slot] != 0) {
      return slotNumbers[slot] - 1;
    }
    if (households == codes.length) {
      codes = Arrays.copyOf(codes, 2 * households);
    }
    codes[households] = code;
    slotCodes[slot] = code;
    slotNumbers[slot] = ++households;
    if (2 * households > slotNumbers.length) {
      rehash();
    }
    return households - 1;
  }

  /** The code's slot, or the free slot where it would go. */
  private int probe(long code) {
    int slot = (int) ((code * SPREAD) >>> shift);
    while (slotNumbers[slot] != 0 && slotCodes[slot] != code) {
      slot = (slot + 1) & (slotNumbers.length - 1);
    }
    return slot;
  }

  private void rehash() {
    shift--;
    slotCodes = new long[2 * slotCodes.length];
    slotNumbers = new int[slotCodes.length];
    for (int h = 0; h < households; h++) {
      int slot = probe(codes[h]);
      slotCodes[slot] = codes[h];
      slotNumbers[slot] = h + 1;
    }
  }
}
