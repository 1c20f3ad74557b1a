package node

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// A dev cluster's ports are picked at init and bound at every start, also when one node
// restarts long after the others. A port from the kernel's ephemeral range can be taken in
// between by any outgoing connection on the host (tests of other packages, the agent's own
// dials), and the restart then fails with "address already in use". So ports are picked
// below that range, where the kernel never assigns one by itself, and only if none is free
// there does the kernel choose.

// ephemeralPortsFile holds the kernel's ephemeral range ("32768\t60999").
const ephemeralPortsFile = "/proc/sys/net/ipv4/ip_local_port_range"

// lowestPickedPort is the bottom of the range ports are picked from: above the well-known
// services most hosts run.
const lowestPickedPort = 10000

// ephemeralLow returns the first port of the kernel's ephemeral range (32768, Linux's
// default, when the file cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile(ephemeralPortsFile)
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo < 1024 {
		return 32768
	}
	return lo
}

// pickPort returns a port free on host for each network asked (TCP and/or UDP), with the
// sockets that reserve it appended to held: the caller closes them once every port is
// picked.
func pickPort(host string, tcp, udp bool, held *[]io.Closer) (int, error) {
	if lo := ephemeralLow(); lo-lowestPickedPort >= 1000 {
		for range 200 {
			p := lowestPickedPort + rand.IntN(lo-lowestPickedPort)
			if socks, err := bindPort(host, p, tcp, udp); err == nil {
				*held = append(*held, socks...)
				return p, nil
			}
		}
	}
	// Below the ephemeral range is crowded or absent: let the kernel choose.
	for range 50 {
		first, err := bindPort(host, 0, tcp, !tcp && udp)
		if err != nil {
			return 0, err
		}
		p := portOf(first[0])
		if !tcp || !udp {
			*held = append(*held, first...)
			return p, nil
		}
		u, err := bindPort(host, p, false, true)
		if err == nil {
			*held = append(*held, first[0], u[0])
			return p, nil
		}
		first[0].Close()
	}
	return 0, fmt.Errorf("node: dev: no free port on %s", host)
}

// bindPort binds port on host for the networks asked and returns the sockets, or closes
// whatever it bound and returns the error.
func bindPort(host string, port int, tcp, udp bool) ([]io.Closer, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	var out []io.Closer
	if tcp {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("node: dev: pick port: %w", err)
		}
		out = append(out, l)
		if port == 0 {
			addr = l.Addr().String()
		}
	}
	if udp {
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, fmt.Errorf("node: dev: pick port: %w", err)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("node: dev: pick port: no network asked")
	}
	return out, nil
}

// portOf returns the port a listener or packet socket is bound to.
func portOf(c io.Closer) int {
	switch s := c.(type) {
	case net.Listener:
		return s.Addr().(*net.TCPAddr).Port
	case net.PacketConn:
		return s.LocalAddr().(*net.UDPAddr).Port
	}
	return 0
}
