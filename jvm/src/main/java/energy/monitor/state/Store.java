package energy.monitor.state;

import java.util.function.BiConsumer;

/** Where a bucket keeps its households' states: the operator's MapState, or a map in a test's replay. */
interface Store {
  byte[] get(long household);

  void put(long household, byte[] blob);

  void remove(long household);

  void forEach(BiConsumer<Long, byte[]> action);
}
