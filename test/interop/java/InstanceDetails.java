package roster.interop;

import java.util.ArrayList;
import java.util.List;

/**
 * A custom Curator payload class, the way Java services typically give their ServiceInstance a
 * payload (Curator's own discovery example does the same): typed fields, read and written by
 * Jackson. A ServiceDiscovery built with this class casts every payload it reads to it.
 */
public class InstanceDetails {
    private String version;
    private int capacity;
    private boolean canary;
    private List<String> regions = new ArrayList<>();

    public InstanceDetails() {}

    public InstanceDetails(String version, int capacity, boolean canary, List<String> regions) {
        this.version = version;
        this.capacity = capacity;
        this.canary = canary;
        this.regions = regions;
    }

    public String getVersion() { return version; }
    public void setVersion(String version) { this.version = version; }
    public int getCapacity() { return capacity; }
    public void setCapacity(int capacity) { this.capacity = capacity; }
    public boolean isCanary() { return canary; }
    public void setCanary(boolean canary) { this.canary = canary; }
    public List<String> getRegions() { return regions; }
    public void setRegions(List<String> regions) { this.regions = regions; }
}
