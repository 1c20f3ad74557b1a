package node

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A dev cluster's ports are picked at init and bound at every start, also when one node
// restarts long after the others. A port from the kernel's ephemeral range can be taken in
// between by any outgoing connection on the host (tests of other packages, the agent's own
// dials), and the restart then fails with "address already in use". So ports are picked
// below that range, where the kernel never assigns one by itself, and only if none is free
// there does the kernel choose. Below that range the only pickers are other dev clusters
// (tests of other packages start theirs in parallel): each keeps its ports in a
// DevPortHold from init until it is done, so no other picks a port of a stopped node.

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

// DevPortHold keeps a dev cluster's ports from being picked by any other dev cluster on
// this host (another process, or another cluster of this one) for as long as it is open,
// also while the nodes that bind them are stopped: a node restarted in a test minutes
// after it stopped finds its ports still free. Each port is held by an exclusive flock(2)
// on a file named after it in DevPortDir; the kernel releases the locks when the process
// ends, so a crashed holder reserves nothing. A nil *DevPortHold holds nothing.
//
// The hold only works between dev clusters, which all pick through it; it is a way to
// avoid collisions, not a security boundary (any process can bind the ports).
type DevPortHold struct {
	mu    sync.Mutex
	files map[int]*os.File
}

// NewDevPortHold returns an empty hold; Close releases it.
func NewDevPortHold() *DevPortHold { return &DevPortHold{files: map[int]*os.File{}} }

// Close releases every port the hold keeps. It is safe to call on nil and more than once.
func (h *DevPortHold) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, f := range h.files {
		f.Close()
		delete(h.files, p)
	}
	return nil
}

// Ports returns the ports the hold keeps, in no particular order.
func (h *DevPortHold) Ports() []int {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]int, 0, len(h.files))
	for p := range h.files {
		out = append(out, p)
	}
	return out
}

// keep adds port's lock file to the hold, or closes it (releasing the port) when h is nil.
func (h *DevPortHold) keep(port int, f *os.File) {
	if h == nil {
		f.Close()
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.files[port]; ok {
		old.Close()
	}
	h.files[port] = f
}

// DevPortDir is the directory of the per-port lock files dev clusters pick through.
func DevPortDir() string { return filepath.Join(os.TempDir(), "coffer-dev-ports") }

// lockPort takes the exclusive lock on port's file. It returns (nil, false) when another
// holder has the port, and (nil, true) when there is no lock to take (the directory
// cannot be made or opened, e.g. another user's: the pick then goes on without one).
func lockPort(port int) (f *os.File, ok bool) {
	dir := DevPortDir()
	if err := os.MkdirAll(dir, 0o1777); err != nil {
		return nil, true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return nil, true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		// EWOULDBLOCK: another holder has it. Any other error: no lock to take.
		return nil, !errors.Is(err, syscall.EWOULDBLOCK)
	}
	return f, true
}

// pickPort returns a port free on host for each network asked (TCP and/or UDP) and not
// held by another dev cluster, with the sockets that reserve it appended to held (the
// caller closes them once every port is picked) and its lock kept in hold.
func pickPort(host string, tcp, udp bool, held *[]io.Closer, hold *DevPortHold) (int, error) {
	// claim locks port against other dev clusters and binds it for every network asked;
	// false when either is taken.
	claim := func(port int) bool {
		lock, free := lockPort(port)
		if !free {
			return false
		}
		socks, err := bindPort(host, port, tcp, udp)
		if err != nil {
			if lock != nil {
				lock.Close()
			}
			return false
		}
		*held = append(*held, socks...)
		if lock != nil {
			hold.keep(port, lock)
		}
		return true
	}
	if lo := ephemeralLow(); lo-lowestPickedPort >= 1000 {
		for range 200 {
			if p := lowestPickedPort + rand.IntN(lo-lowestPickedPort); claim(p) {
				return p, nil
			}
		}
	}
	// Below the ephemeral range is crowded or absent: the kernel names a free port, which
	// is then claimed like any other (another process may take it in between: try again).
	for range 50 {
		probe, err := bindPort(host, 0, tcp, !tcp && udp)
		if err != nil {
			return 0, err
		}
		p := portOf(probe[0])
		probe[0].Close()
		if claim(p) {
			return p, nil
		}
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
