package roster.interop;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.apache.curator.x.discovery.details.JsonInstanceSerializer;

/**
 * A Java service using Curator x-discovery with a custom payload class (InstanceDetails), driven
 * line by line on stdin so one JVM serves a whole test:
 *
 *   register <service> <id> <address> <port> <version> <capacity> <canary> <region,region>
 *       → "registered <id>"
 *   query <service>
 *       → "instances <JSON array>" (id, address, port, payloadClass and the payload's fields),
 *         or "error <exception class> <message>" when Curator throws (one bad payload makes
 *         queryForInstances throw for the whole service)
 *   quit (or EOF) → unregisters, closes, exits 0
 *
 * Usage: DiscoveryProbe <zk connect string> <base path>
 */
public class DiscoveryProbe {
    public static void main(String[] args) throws Exception {
        CuratorFramework client = CuratorFrameworkFactory.newClient(args[0], new ExponentialBackoffRetry(100, 5));
        client.start();
        client.blockUntilConnected();
        ServiceDiscovery<InstanceDetails> discovery = ServiceDiscoveryBuilder.builder(InstanceDetails.class)
            .client(client)
            .basePath(args[1])
            .serializer(new JsonInstanceSerializer<>(InstanceDetails.class))
            .build();
        discovery.start();
        ObjectMapper json = new ObjectMapper();
        System.out.println("ready");
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
        String line;
        while ((line = in.readLine()) != null) {
            String[] w = line.trim().split("\\s+");
            try {
                if (w[0].equals("register")) {
                    List<String> regions = new ArrayList<>(Arrays.asList(w[8].split(",")));
                    ServiceInstance<InstanceDetails> instance = ServiceInstance.<InstanceDetails>builder()
                        .name(w[1]).id(w[2]).address(w[3]).port(Integer.parseInt(w[4]))
                        .payload(new InstanceDetails(w[5], Integer.parseInt(w[6]), Boolean.parseBoolean(w[7]), regions))
                        .build();
                    discovery.registerService(instance);
                    System.out.println("registered " + w[2]);
                } else if (w[0].equals("query")) {
                    Collection<ServiceInstance<InstanceDetails>> found = discovery.queryForInstances(w[1]);
                    ArrayNode out = json.createArrayNode();
                    for (ServiceInstance<InstanceDetails> i : found) {
                        InstanceDetails p = i.getPayload(); // typed: the cast Curator already checked
                        ObjectNode o = out.addObject();
                        o.put("id", i.getId());
                        o.put("address", i.getAddress());
                        o.put("port", i.getPort());
                        o.put("payloadClass", p == null ? null : p.getClass().getName());
                        if (p != null) {
                            o.put("version", p.getVersion());
                            o.put("capacity", p.getCapacity());
                            o.put("canary", p.isCanary());
                            o.set("regions", json.valueToTree(p.getRegions()));
                        }
                    }
                    System.out.println("instances " + json.writeValueAsString(out));
                } else if (w[0].equals("quit")) {
                    break;
                } else {
                    System.out.println("error IllegalArgumentException unknown command " + w[0]);
                }
            } catch (Exception e) {
                System.out.println("error " + e.getClass().getName() + " " + String.valueOf(e.getMessage()).replace('\n', ' '));
            }
            System.out.flush();
        }
        discovery.close();
        client.close();
    }
}
