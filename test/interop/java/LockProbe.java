package roster.interop;

import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;

/**
 * Curator's InterProcessMutex or LeaderLatch in a loop, recording every critical section in a
 * shared log file so a test can check mutual exclusion against another party (roster) using the
 * same ZooKeeper path:
 *
 *   LockProbe <zk connect string> mutex|latch <path> <log file> <iterations> <hold ms> <label>
 *
 * Each iteration acquires the mutex (or becomes leader of a fresh LeaderLatch), appends
 * "+<label>" to the log, holds for <hold ms>, appends "-<label>", then releases (closes the
 * latch). Each line is one write(2) on a file opened with O_APPEND, so lines from several
 * processes land in the order they happened. Prints "ready" once connected and "done" at the end.
 */
public class LockProbe {
    public static void main(String[] args) throws Exception {
        String mode = args[1];
        String path = args[2];
        int iterations = Integer.parseInt(args[4]);
        long holdMs = Long.parseLong(args[5]);
        String label = args[6];
        CuratorFramework client = CuratorFrameworkFactory.newClient(args[0], new ExponentialBackoffRetry(100, 5));
        client.start();
        client.blockUntilConnected();
        System.out.println("ready");
        System.out.flush();
        try (FileOutputStream log = new FileOutputStream(args[3], true)) {
            byte[] enter = ("+" + label + "\n").getBytes(StandardCharsets.UTF_8);
            byte[] exit = ("-" + label + "\n").getBytes(StandardCharsets.UTF_8);
            for (int n = 0; n < iterations; n++) {
                if (mode.equals("mutex")) {
                    InterProcessMutex mutex = new InterProcessMutex(client, path);
                    if (!mutex.acquire(60, TimeUnit.SECONDS)) throw new IllegalStateException("mutex not acquired within 60 s");
                    try {
                        log.write(enter);
                        Thread.sleep(holdMs);
                        log.write(exit);
                    } finally {
                        mutex.release();
                    }
                } else {
                    LeaderLatch latch = new LeaderLatch(client, path, label);
                    latch.start();
                    try {
                        if (!latch.await(60, TimeUnit.SECONDS)) throw new IllegalStateException("not leader within 60 s");
                        log.write(enter);
                        Thread.sleep(holdMs);
                        log.write(exit);
                    } finally {
                        latch.close();
                    }
                }
                Thread.sleep(ThreadLocalRandom.current().nextLong(1, 10));
            }
        }
        System.out.println("done");
        System.out.flush();
        client.close();
    }
}
