package energy.monitor.state;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;

/**
 * A cursor over a household's state bytes, little-endian: the layout Household writes. Plain
 * array views rather than a ByteBuffer, whose every access also checks its memory session: the
 * state is read and written once a touched household a batch.
 */
final class Blob {
  private static final VarHandle LONG = MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
  private static final VarHandle INT = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

  final byte[] bytes;
  private int at;

  Blob(byte[] bytes) {
    this.bytes = bytes;
  }

  byte getByte() {
    return bytes[at++];
  }

  int getInt() {
    int value = (int) INT.get(bytes, at);
    at += 4;
    return value;
  }

  long getLong() {
    long value = (long) LONG.get(bytes, at);
    at += 8;
    return value;
  }

  double getDouble() {
    return Double.longBitsToDouble(getLong());
  }

  Blob putByte(byte value) {
    bytes[at++] = value;
    return this;
  }

  Blob putInt(int value) {
    INT.set(bytes, at, value);
    at += 4;
    return this;
  }

  Blob putLong(long value) {
    LONG.set(bytes, at, value);
    at += 8;
    return this;
  }

  Blob putDouble(double value) {
    return putLong(Double.doubleToRawLongBits(value));
  }
}
