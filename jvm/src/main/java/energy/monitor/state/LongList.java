package energy.monitor.state;

import java.util.Arrays;

/** A growable list of longs (a household's panes and windows are a few dozen at most). */
final class LongList {
  long[] values;
  int size;

  LongList() {
    this(4);
  }

  LongList(int capacity) {
    values = new long[Math.max(1, capacity)];
  }

  void add(long value) {
    if (size == values.length) {
      values = Arrays.copyOf(values, 2 * size);
    }
    values[size++] = value;
  }

  void insert(int at, long value) {
    add(0);
    System.arraycopy(values, at, values, at + 1, size - at - 1);
    values[at] = value;
  }

  long get(int at) {
    return values[at];
  }

  boolean contains(long value) {
    for (int i = 0; i < size; i++) {
      if (values[i] == value) {
        return true;
      }
    }
    return false;
  }

  /** Adds `value` to an ascending list unless it holds it; whether it was added. */
  boolean addSorted(long value) {
    int low = 0;
    int high = size;
    while (low < high) {
      int mid = (low + high) >>> 1;
      if (values[mid] < value) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    if (low < size && values[low] == value) {
      return false;
    }
    insert(low, value);
    return true;
  }

  /** Keeps the values at or above `least`, in their order. */
  void keepFrom(long least) {
    int kept = 0;
    for (int i = 0; i < size; i++) {
      if (values[i] >= least) {
        values[kept++] = values[i];
      }
    }
    size = kept;
  }

  void clear() {
    size = 0;
  }
}
